package config

import (
	"reflect"
	"time"

	"github.com/tapvs/tapvs/handoff"
	"github.com/tapvs/tapvs/nat"
)

// RestartOnly is what cannot change under a running data path: the TAPs
// are open with these sides, the connection table and the port ranges are
// sized, the sockets bound. A reload that changes one of them names it
// (Changed) and keeps the running value until a restart.
//
// Each field's key tag is its name in the file, as a reload names it; a
// field is compared whole (an interface's routes are the interface's).
// The fields are in the file's order, which is the order Changed names
// them in.
type RestartOnly struct {
	Client Interface `key:"interfaces.client"`
	Server Interface `key:"interfaces.server"`
	// Offload opens both TAPs with a virtio-net header and checksum/TSO
	// offload (64 KiB super-frames); tapvs falls back to plain TAPs if the
	// kernel refuses.
	Offload bool `key:"interfaces.offload"`
	// BusyPoll, if set, has one thread poll every queue and sleep only
	// after this long without a frame (0: a reader per queue that sleeps
	// whenever its queue is empty).
	BusyPoll time.Duration `key:"interfaces.busy_poll"`
	// IO is how the TAPs are read and written: "auto" (the default:
	// io_uring where the kernel allows it, else system calls, said once in
	// the log), "uring" (io_uring pollers; refused io_uring fails the
	// start) or "syscalls" (a read and a write per frame).
	IO string `key:"interfaces.io"`
	// Pollers is how many io_uring pollers share the queues (io: uring or
	// auto): 0 picks half the CPUs, at most the larger side's queue count.
	Pollers int `key:"interfaces.pollers"`
	// PollGroups, when set, says which queues each io_uring poller reads:
	// poller k the client and server queues of index PollGroups[k] (every
	// index below the larger side's queue count in one group).
	PollGroups [][]int `key:"interfaces.poll_groups"`
	MaxConns   int     `key:"limits.max_connections"`
	PortMin    uint16  `key:"limits.local_port_min"`
	PortMax    uint16  `key:"limits.local_port_max"`
	// PortQuarantine keeps closed TCP connections' reply tuples from reuse
	// (the real server's TIME_WAIT); 0 turns it off.
	PortQuarantine time.Duration      `key:"limits.port_quarantine"`
	Synproxy       nat.SynproxyConfig `key:"synproxy"`
	Sweep          time.Duration      `key:"sweep_interval"`
	// Fragments is the reassembly of fragments to a VIP or LIP and its
	// bounds (fragments:, as Linux's ipfrag_high_thresh and ipfrag_time).
	Fragments     Fragments `key:"fragments"`
	LogLevel      string    `key:"log.level"`
	LogFormat     string    `key:"log.format"`
	ControlSocket string    `key:"control.socket"` // "" disables the control API
	MetricsListen string    `key:"metrics.listen"` // "" disables the Prometheus endpoint
	// Handoff, if set, hands client segments that no connection here
	// holds to the cluster's other instances, and continues those they
	// hand here (package handoff); nil drops them.
	Handoff *handoff.Config `key:"handoff"`
	// Sync, if set, sends this instance's connections to the cluster's
	// other instances and keeps theirs (package connsync); nil: none.
	Sync *Sync `key:"sync"`
}

// Changed names, by their keys in the file, the fields of next that
// differ from r's: what a reload to next leaves for a restart. None: r
// and next are equal.
func (r *RestartOnly) Changed(next *RestartOnly) []string {
	var names []string
	a, b := reflect.ValueOf(r).Elem(), reflect.ValueOf(next).Elem()
	for i := range a.NumField() {
		if !reflect.DeepEqual(a.Field(i).Interface(), b.Field(i).Interface()) {
			names = append(names, restartKeys[i])
		}
	}
	return names
}

// restartKeys are RestartOnly's fields' keys, by field index.
var restartKeys = func() []string {
	t := reflect.TypeFor[RestartOnly]()
	keys := make([]string, t.NumField())
	for i := range keys {
		keys[i] = t.Field(i).Tag.Get("key")
	}
	return keys
}()
