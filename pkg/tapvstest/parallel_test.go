package tapvstest_test

import (
	"context"
	"flag"
	"fmt"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tapvs/tapvs/pkg/tapvstest"
)

// labTimes is one lab's figures in TestParallelLabs.
type labTimes struct {
	name                     string
	setup, traffic, teardown time.Duration
}

// Ten labs (or as many as -parallel lets run at once), each sending real
// traffic through its own tapvs to its own real servers: every lab's
// servers count exactly its requests and datagrams, which they would not
// if a frame crossed into another lab (a TAP or namespace shared by two).
// The time each lab took to build, use and remove is logged, and the total:
//
//	go test -run TestParallelLabs -parallel 10 -v ./pkg/tapvstest
//
// TAPVS_LABS=n runs n labs instead of ten (with -parallel n, all at once).
func TestParallelLabs(t *testing.T) {
	const requests, echoes = 6, 4
	labs := 10
	if n, err := strconv.Atoi(os.Getenv("TAPVS_LABS")); err == nil && n > 0 {
		labs = n // to find where the host gives out
	}
	start := time.Now()
	// With room for every lab at once, each waits for the others to be up
	// before it sends: all ten are up, side by side, while traffic
	// crosses them.
	together := parallel() >= labs
	all := make(chan struct{})
	var ready atomic.Int32
	var (
		mu       sync.Mutex
		times    []labTimes
		names    = map[string]bool{}
		up, most atomic.Int32
	)
	t.Cleanup(func() {
		total := time.Since(start)
		mu.Lock()
		defer mu.Unlock()
		slices.SortFunc(times, func(a, b labTimes) int { return strings.Compare(a.name, b.name) })
		var setup, traffic, teardown time.Duration
		for _, lt := range times {
			t.Logf("lab %s: setup %v, traffic %v, teardown %v", lt.name, lt.setup.Round(time.Millisecond), lt.traffic.Round(time.Millisecond), lt.teardown.Round(time.Millisecond))
			setup += lt.setup
			traffic += lt.traffic
			teardown += lt.teardown
		}
		if n := time.Duration(len(times)); n > 0 {
			t.Logf("%d labs, at most %d up at once: mean setup %v, traffic %v, teardown %v; %v in all (%v a lab)",
				n, most.Load(), (setup / n).Round(time.Millisecond), (traffic / n).Round(time.Millisecond), (teardown / n).Round(time.Millisecond),
				total.Round(time.Millisecond), (total / n).Round(time.Millisecond))
		}
	})
	for i := range labs {
		t.Run(fmt.Sprintf("lab%d", i), func(t *testing.T) {
			t.Parallel()
			var lt labTimes
			var down time.Time
			// Cleanups run last first: this one after the lab's, the
			// one below before them.
			t.Cleanup(func() {
				lt.teardown = time.Since(down)
				mu.Lock()
				times = append(times, lt)
				mu.Unlock()
			})
			l := tapvstest.NewLab(t, tapvstest.Options{UDP: true})
			t.Cleanup(func() { up.Add(-1); down = time.Now() })
			n := up.Add(1)
			for m := most.Load(); n > m && !most.CompareAndSwap(m, n); m = most.Load() {
			}
			lt.name, lt.setup = l.Name, l.SetupTime
			if together {
				if int(ready.Add(1)) == labs {
					close(all)
				}
				select {
				case <-all:
				case <-time.After(time.Minute):
					t.Fatalf("%d of %d labs up after a minute", ready.Load(), labs)
				}
			}
			mu.Lock()
			dup := names[l.Name]
			names[l.Name] = true
			mu.Unlock()
			if dup {
				t.Fatalf("two labs named %s", l.Name)
			}
			began := time.Now()
			seen := map[string]int{}
			for range requests {
				name, saw := get(t, l)
				seen[name]++
				if saw.Addr() != l.LocalAddrs[0] && saw.Addr() != l.LocalAddrs[1] {
					t.Errorf("%s saw %s, not one of this lab's local addresses", name, saw)
				}
			}
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			for e := range echoes {
				msg := fmt.Sprintf("%s %d", l.Name, e)
				server, reply, err := l.Echo(ctx, msg)
				if err != nil {
					t.Fatal(err)
				}
				seen[server+"/udp"]++
				if reply != msg {
					t.Errorf("%s echoed %q to %q", server, reply, msg)
				}
			}
			lt.traffic = time.Since(began)
			// rr over two servers: each of this lab's servers has half of
			// this lab's traffic, no more (another lab's) and no less.
			for _, rs := range l.RealServers {
				if rs.Requests() != requests/2 || rs.Echoes() != echoes/2 {
					t.Errorf("%s of %s answered %d requests and %d datagrams, want %d and %d", rs.Name, l.Name, rs.Requests(), rs.Echoes(), requests/2, echoes/2)
				}
			}
			if want := map[string]int{"rs1": requests / 2, "rs2": requests / 2, "rs1/udp": echoes / 2, "rs2/udp": echoes / 2}; !maps(seen, want) {
				t.Errorf("answers by server: %v, want %v", seen, want)
			}
			if c := l.LB.Counters(); c.ConnsCreated != requests+echoes {
				t.Errorf("%s's tapvs opened %d connections, want %d", l.Name, c.ConnsCreated, requests+echoes)
			}
		})
	}
}

// parallel is go test's -parallel.
func parallel() int {
	if f := flag.Lookup("test.parallel"); f != nil {
		if n, err := strconv.Atoi(f.Value.String()); err == nil {
			return n
		}
	}
	return 1
}

func maps(a, b map[string]int) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if b[k] != v {
			return false
		}
	}
	return true
}
