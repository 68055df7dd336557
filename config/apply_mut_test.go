package config

import (
	"strings"
	"testing"

	"github.com/tapvs/tapvs/nat"
)

// A real server whose port changes is another real server: the old one is
// deleted, the new one added, its address's other servers kept.
func TestApplyRealServerPortChange(t *testing.T) {
	bal := running(t, parse(t, configA))
	b := parse(t, strings.Replace(configA, "{address: 10.20.1.2, port: 80, weight: 1}", "{address: 10.20.1.2, port: 8080, weight: 1}", 1))
	if err := apply(bal, b, nil); err != nil {
		t.Fatal(err)
	}
	want := `TCP 172.25.254.100:80 name=web sched=wrr synproxy=false lips=[172.25.84.10 172.25.84.11] rs=[10.20.1.2:8080 w1, 10.20.2.2:80 w2]
UDP 172.25.254.100:53 name=dns sched=wlc synproxy=false lips=[172.25.84.20] rs=[10.20.1.2:53 w1]`
	if got := short(bal); got != want {
		t.Fatalf("after the port change:\n%s\nwant:\n%s", got, want)
	}
}

// A number written as a float is a whole number up to 2^53, where floats
// stop holding every integer: 2^53 itself is read (and then refused by the
// field's range), the next float past it is refused as not whole.
func TestFloatToIntAtTwoToThe53(t *testing.T) {
	_, err := Parse(valid + "limits: {max_connections: 9.007199254740992e15}\n")
	if err == nil || !strings.Contains(err.Error(), "limits.max_connections: 9007199254740992 is out of range") {
		t.Fatalf("2^53: %v", err)
	}
	_, err = Parse(valid + "limits: {max_connections: 9.007199254740994e15}\n")
	if err == nil || !strings.Contains(err.Error(), "is not a whole number") || !strings.Contains(err.Error(), "max_connections") {
		t.Fatalf("2^53+2: %v", err)
	}
}

// Lists are sets: a service's allow and deny prefixes given in another
// order (and another order of lengths) are no change.
func TestApplyReorderedListsNoChange(t *testing.T) {
	lists := "port: 80\n    scheduler: wrr\n    allow: [10.1.0.0/16, 10.0.0.0/8, 10.2.0.0/16, 10.2.0.0/24]\n    deny: [10.1.2.0/24, 10.1.1.0/24]\n    local"
	reordered := "port: 80\n    scheduler: wrr\n    allow: [10.2.0.0/24, 10.2.0.0/16, 10.0.0.0/8, 10.1.0.0/16]\n    deny: [10.1.1.0/24, 10.1.2.0/24]\n    local"
	if !strings.Contains(configA, "port: 80\n    scheduler: wrr\n    local") {
		t.Fatal("bad test: configA changed")
	}
	bal := running(t, parse(t, strings.Replace(configA, "port: 80\n    scheduler: wrr\n    local", lists, 1)))
	gen := bal.Generation()
	var changes int
	err := bal.Update(func(tx *nat.Tx) error {
		err := parse(t, strings.Replace(configA, "port: 80\n    scheduler: wrr\n    local", reordered, 1)).Apply(tx, nil)
		changes = tx.Changes()
		return err
	})
	if err != nil || changes != 0 || bal.Generation() != gen {
		t.Fatalf("the same lists reordered: %v, %d changes, generation %d from %d", err, changes, bal.Generation(), gen)
	}
}

// A reload that drops two real servers of a service drops both.
func TestApplyDropsEveryRemovedServer(t *testing.T) {
	bal := running(t, parse(t, configA))
	b := parse(t, strings.Replace(configA, "      - {address: 10.20.1.2, port: 80, weight: 1}\n      - {address: 10.20.2.2, port: 80, weight: 2}\n",
		"      - {address: 10.20.3.2, port: 80, weight: 1}\n", 1))
	if err := apply(bal, b, nil); err != nil {
		t.Fatal(err)
	}
	want := `TCP 172.25.254.100:80 name=web sched=wrr synproxy=false lips=[172.25.84.10 172.25.84.11] rs=[10.20.3.2:80 w1]
UDP 172.25.254.100:53 name=dns sched=wlc synproxy=false lips=[172.25.84.20] rs=[10.20.1.2:53 w1]`
	if got := short(bal); got != want {
		t.Fatalf("after dropping two servers:\n%s\nwant:\n%s", got, want)
	}
}
