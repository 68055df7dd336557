package nat

import (
	"math/rand/v2"
	"testing"
)

// The persistent map against a Go map, over random changes: with a hash
// of few bits (many keys per slot, whole-hash collisions in leaves) and
// with a good one; every older version keeps what it held, edits made
// under one token included, once a new token is used.
func TestPmap(t *testing.T) {
	for _, hbits := range []uint{3, 12, 64} {
		hash := func(k int) uint64 {
			h := mum(uint64(k)^0x9e3779b97f4a7c15, 0xc2b2ae3d27d4eb4f)
			if hbits < 64 {
				h &= 1<<hbits - 1
			}
			return h
		}
		rng := rand.New(rand.NewPCG(1, uint64(hbits)))
		var m pmap[int, int]
		model := map[int]int{}
		type version struct {
			m     pmap[int, int]
			model map[int]int
		}
		var versions []version
		for round := range 200 {
			ed := new(pedit)
			if round%3 == 0 {
				ed = nil // copies every node
			}
			for range rng.IntN(40) {
				k := rng.IntN(300)
				if rng.IntN(3) == 0 {
					m = m.without(hash(k), k, ed)
					delete(model, k)
				} else {
					v := rng.Int()
					m = m.with(hash(k), k, v, ed)
					model[k] = v
				}
			}
			snap := map[int]int{}
			for k, v := range model {
				snap[k] = v
			}
			versions = append(versions, version{m, snap})
			for _, ver := range versions[max(0, len(versions)-20):] {
				checkPmap(t, hbits, ver.m, ver.model, hash)
			}
		}
	}
}

func checkPmap(t *testing.T, hbits uint, m pmap[int, int], model map[int]int, hash func(int) uint64) {
	t.Helper()
	if m.n != len(model) {
		t.Fatalf("hash bits %d: %d keys, want %d", hbits, m.n, len(model))
	}
	for k := range 300 {
		v, ok := m.get(hash(k), k)
		if mv, mok := model[k]; ok != mok || v != mv {
			t.Fatalf("hash bits %d: key %d: %d %v, want %d %v", hbits, k, v, ok, mv, mok)
		}
	}
	n := 0
	m.each(func(k, v int) {
		n++
		if model[k] != v {
			t.Fatalf("hash bits %d: each gave %d=%d, want %d", hbits, k, v, model[k])
		}
	})
	if n != len(model) {
		t.Fatalf("hash bits %d: each gave %d entries, want %d", hbits, n, len(model))
	}
}
