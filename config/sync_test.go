package config

import (
	"fmt"
	"strings"
	"testing"
	"time"
)

const syncSection = `
sync:
  listen: 10.1.1.2:7701
  id: 1
  peers:
    - {address: 10.1.2.2:7701, id: 2}
    - {address: 10.1.3.2:7701, id: 3}
  keys:
    - {id: 1, key: 000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f}
`

const validSync = valid + syncSection

func TestSyncSection(t *testing.T) {
	c, err := Parse(validSync)
	if err != nil {
		t.Fatal(err)
	}
	s := c.Sync
	if s == nil || s.Listen.String() != "10.1.1.2:7701" || s.ID != 1 || len(s.Peers) != 2 || s.Peers[1].Addr.String() != "10.1.3.2:7701" ||
		s.Peers[1].ID != 3 || len(s.Keys) != 1 || s.Keys[0].ID != 1 || len(s.Keys[0].Secret) != 32 || s.Keys[0].Secret[31] != 0x1f || s.Rate != 10000 || s.JoinTimeout != 10*time.Second {
		t.Fatalf("sync %+v", s)
	}
	if c, _ := Parse(valid); c.Sync != nil {
		t.Fatal("no sync: section, yet sync configured")
	}
	key2 := "    - {id: 1, key: 000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f}\n    - {id: 2, key: 1f0102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f}\n"
	for name, tc := range map[string]struct{ from, to string }{
		"rate 1":    {"  listen:", "  rate: 1\n  listen:"},
		"rate max":  {"  listen:", "  rate: 1000000\n  listen:"},
		"join 1s":   {"  listen:", "  join_timeout: 1s\n  listen:"},
		"join 10m":  {"  listen:", "  join_timeout: 10m\n  listen:"},
		"two keys":  {"    - {id: 1, key: 000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f}\n", key2},
		"id 65535":  {"  id: 1\n", "  id: 65535\n"},
		"ipv6 peer": {"10.1.3.2:7701", "'[fd00::3]:7701'"},
		"same host": {"10.1.3.2:7701", "10.1.1.2:7702"},
		"64 peers":  {"    - {address: 10.1.2.2:7701, id: 2}\n    - {address: 10.1.3.2:7701, id: 3}\n", syncPeers(64)},
	} {
		if !strings.Contains(validSync, tc.from) {
			t.Fatalf("%s: bad test: %q not in config", name, tc.from)
		}
		if _, err := Parse(strings.Replace(validSync, tc.from, tc.to, 1)); err != nil {
			t.Errorf("%s: refused: %v", name, err)
		}
	}
}

func syncPeers(n int) string {
	var b strings.Builder
	for i := range n {
		fmt.Fprintf(&b, "    - {address: 10.2.%d.2:7701, id: %d}\n", i, i+2)
	}
	return b.String()
}

// Every bad sync: value is refused with its field named.
func TestSyncErrorsNameTheField(t *testing.T) {
	p2 := "    - {address: 10.1.2.2:7701, id: 2}\n"
	k := "    - {id: 1, key: 000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f}\n"
	cases := map[string]struct{ from, to, want string }{
		"listen":        {"listen: 10.1.1.2:7701", "listen: 10.1.1.2", `sync.listen: "10.1.1.2" is not ip:port`},
		"listen any":    {"listen: 10.1.1.2:7701", "listen: 0.0.0.0:7701", "sync.listen: 0.0.0.0:7701 is not ip:port of a unicast address"},
		"listen 0":      {"listen: 10.1.1.2:7701", "listen: 10.1.1.2:0", "sync.listen: 10.1.1.2:0 is not ip:port"},
		"no id":         {"  id: 1\n", "", "sync.id: none is not an instance id 1-65535"},
		"id 0":          {"  id: 1\n", "  id: 0\n", "sync.id: 0 is not an instance id"},
		"id big":        {"  id: 1\n", "  id: 65536\n", "sync.id: 65536 is not an instance id"},
		"no peers":      {p2 + "    - {address: 10.1.3.2:7701, id: 3}\n", "    []\n", "sync.peers: no peer"},
		"65 peers":      {p2 + "    - {address: 10.1.3.2:7701, id: 3}\n", syncPeers(65), "sync.peers: 65 peers: at most 64"},
		"peer syntax":   {"10.1.2.2:7701", "10.1.2.2", `sync.peers[0].address: "10.1.2.2" is not ip:port`},
		"peer any":      {"10.1.2.2:7701", "0.0.0.0:7701", `sync.peers[0].address: "0.0.0.0:7701" is not ip:port of a unicast address`},
		"peer self":     {"10.1.2.2:7701", "10.1.1.2:7701", "sync.peers[0].address: 10.1.1.2:7701 is this instance's own listen address"},
		"peer dup":      {"10.1.3.2:7701", "10.1.2.2:7701", "sync.peers[1].address: 10.1.2.2:7701 is peers[0]'s too"},
		"peer no id":    {"10.1.2.2:7701, id: 2}", "10.1.2.2:7701}", "sync.peers[0].id: none is not an instance id"},
		"peer own id":   {"10.1.2.2:7701, id: 2}", "10.1.2.2:7701, id: 1}", "sync.peers[0].id: 1 is this instance's own id"},
		"peer id dup":   {"10.1.3.2:7701, id: 3}", "10.1.3.2:7701, id: 2}", "sync.peers[1].id: 2 is peers[0]'s too"},
		"no keys":       {"  keys:\n" + k, "", "sync.keys: 0 keys: 1 or 2"},
		"three keys":    {k, k + strings.Replace(k, "id: 1", "id: 2", 1) + strings.Replace(k, "id: 1", "id: 3", 1), "sync.keys: 3 keys: 1 or 2"},
		"key id dup":    {k, k + k, "sync.keys[1].id: 1 is keys[0]'s too"},
		"key id big":    {"{id: 1, key", "{id: 256, key", "sync.keys[0].id: 256 is not a key id 0-255"},
		"key no id":     {"{id: 1, key", "{key", "sync.keys[0].id: none is not a key id"},
		"key short":     {"key: 0001020304", "key: 01", "sync.keys[0].key: is not 64 hex digits"},
		"key hex":       {"key: 0001020304", "key: zz01020304", "sync.keys[0].key: is not 64 hex digits"},
		"rate 0":        {"  listen:", "  rate: 0\n  listen:", "sync.rate: 0 is out of range 1-1000000"},
		"rate big":      {"  listen:", "  rate: 1000001\n  listen:", "sync.rate: 1000001 is out of range"},
		"join short":    {"  listen:", "  join_timeout: 500ms\n  listen:", `sync.join_timeout: "500ms" is not a duration from 1s to 10m`},
		"join long":     {"  listen:", "  join_timeout: 11m\n  listen:", `sync.join_timeout: "11m" is not a duration from 1s to 10m`},
		"join text":     {"  listen:", "  join_timeout: soon\n  listen:", `sync.join_timeout: "soon" is not a duration`},
		"unknown field": {"  listen:", "  multicast: true\n  listen:", "multicast"},
	}
	for name, tc := range cases {
		if !strings.Contains(validSync, tc.from) {
			t.Fatalf("%s: bad test: %q not in config", name, tc.from)
		}
		_, err := Parse(strings.Replace(validSync, tc.from, tc.to, 1))
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: error %v, want it to say %q", name, err, tc.want)
		}
	}
}

// The shipped config.yaml's commented sync: section, uncommented, is
// valid.
func TestShippedSyncSectionParses(t *testing.T) {
	section := shippedSection(t, "sync")
	c, err := Parse(valid + section)
	if err != nil {
		t.Fatalf("config.yaml's sync: section: %v\n%s", err, section)
	}
	if c.Sync == nil || len(c.Sync.Peers) != 2 || c.Sync.Rate != 10000 || c.Sync.ID != 1 {
		t.Fatalf("config.yaml's sync: section read as %+v", c.Sync)
	}
}

// SYNPROXY's cookie keys derive from the key sync signs with, else from
// the handoff's key, else from nothing (random keys on a lone instance).
func TestCookieSecret(t *testing.T) {
	handoffKey := strings.Replace(strings.TrimPrefix(validHandoff, valid), "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f",
		"ff0102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f", 1)
	twoKeys := strings.Replace(syncSection, "  keys:\n", "  keys:\n    - {id: 2, key: 1f0102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f}\n", 1)
	for name, tc := range map[string]struct {
		conf  string
		first byte // the secret's first byte; 0: none
	}{
		"lone":          {valid, 0},
		"sync":          {validSync, 0x00},
		"sync, 2 keys":  {valid + twoKeys, 0x1f},
		"handoff":       {valid + handoffKey, 0xff},
		"sync, handoff": {valid + twoKeys + handoffKey, 0x1f},
	} {
		c, err := Parse(tc.conf)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		s := c.CookieSecret()
		if name == "lone" {
			if s != nil {
				t.Errorf("%s: secret %x, want none", name, s)
			}
			continue
		}
		if len(s) != 32 || s[0] != tc.first {
			t.Errorf("%s: secret %x, want 32 bytes from %#x", name, s, tc.first)
		}
	}
}
