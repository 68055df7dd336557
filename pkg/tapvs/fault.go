package tapvs

import (
	"fmt"
	"net/netip"
	"strconv"
	"strings"
	"time"

	"github.com/tapvs/tapvs/config"
	"github.com/tapvs/tapvs/control/api"
	"github.com/tapvs/tapvs/nat"
)

// Fault makes the network misbehave on purpose, for failover and chaos
// tests, on the packet path tapvs already is on: the client and the server
// change nothing. It acts on one target (a service, a real server in every
// service that has it, or clients), in one direction or both, as the
// network in front of tapvs would. Faults are never on unless set, and
// are counted (Faults).
type Fault struct {
	// The target: exactly one of them.
	Service ServiceKey     // a service's traffic (a match service by its Mark)
	Server  netip.AddrPort // a real server's, in every service (port 0: a match service's)
	Client  netip.Prefix   // the traffic of these clients

	// Direction is "to_server", "to_client" or "" (both).
	Direction string
	// Blackhole drops every frame. A blackholed server is silent to
	// tapvs's health checks too (with Direction to_client or both).
	Blackhole bool
	// Loss drops each frame with this probability (0 to 1).
	Loss float64
	// Every drops every Nth frame (1: all; 0: none).
	Every int
	// SYN drops ("drop": the client's connect times out) or refuses with
	// an RST ("refuse") the SYNs that would open new connections.
	SYN string
	// DropFIN drops the TCP FINs of the direction: a half-close that
	// never completes.
	DropFIN bool

	// The delay family: the frames the fault lets through leave from a
	// line of their own per direction.

	// Latency delays each frame (up to a minute); Jitter spreads the
	// delay evenly over Latency-Jitter to Latency+Jitter (Jitter at most
	// Latency), frames kept in order.
	Latency, Jitter time.Duration
	// Rate caps the direction's bytes a second (whole frames, Ethernet
	// header included; at least 1514, at most 100 Gbit/s), queueing up
	// to 250ms of it and dropping past that. 0: no cap.
	Rate uint64
	// Duplicate sends a frame twice with this probability (0 to 1).
	Duplicate float64
	// Reorder holds a frame back with this probability (0 to 1): it
	// leaves right after the next frame, or 10ms late if none comes.
	Reorder float64

	// The reset family, on TCP connections.

	// ResetBytes ends a connection once this many bytes of its stream
	// have passed in the direction: the receiver gets exactly that many,
	// then an RST, and its peer an RST. 0: none.
	ResetBytes uint64
	// ResetAfter ends a connection with an RST to each side this long
	// after the fault first saw it (up to 24h). 0: none.
	ResetAfter time.Duration
}

// FaultStatus is a fault in force and what it has done since it was set.
type FaultStatus struct {
	Fault
	Frames  uint64 // frames of its target and direction it met
	Dropped uint64 // frames it dropped, SYNs included
	Refused uint64 // SYNs it answered with an RST
	Delayed uint64 // frames it put on a delay line, duplicates included
	Reset   uint64 // connections it ended with RSTs
}

// spec is f as the control API takes it.
func (f Fault) spec() api.Fault {
	out := api.Fault{Direction: f.Direction, Blackhole: f.Blackhole, Loss: f.Loss, Every: f.Every, SYN: f.SYN,
		DropFIN: f.DropFIN, Latency: durationSpec(f.Latency), Jitter: durationSpec(f.Jitter), Duplicate: f.Duplicate, Reorder: f.Reorder,
		ResetBytes: f.ResetBytes, ResetAfter: durationSpec(f.ResetAfter)}
	if f.Rate != 0 {
		out.Rate = strconv.FormatUint(f.Rate, 10) // bytes a second, as a refusal then quotes it
	}
	if f.Service != (ServiceKey{}) {
		out.Service = f.Service.String()
	}
	if f.Server.IsValid() {
		out.Server = f.Server.String()
	}
	if f.Client.IsValid() {
		out.Client = f.Client.String()
	}
	return out
}

// durationSpec is d as the API takes it: "" for none.
func durationSpec(d time.Duration) string {
	if d == 0 {
		return ""
	}
	return d.String()
}

// faultOf is a fault the API lists, in this package's types: read back
// by the parser that read it in.
func faultOf(v api.FaultView) (FaultStatus, error) {
	nf, err := config.ParseFault(v.Fault)
	if err != nil {
		return FaultStatus{}, fmt.Errorf("tapvs: a fault listed as %+v: %w", v.Fault, err) // tapvs's own text: a bug
	}
	t := nf.Target
	f := Fault{Server: t.Server, Client: t.Client, Blackhole: nf.Blackhole, Loss: nf.Loss, Every: int(nf.Every), SYN: nf.SYN.String(),
		DropFIN: nf.DropFIN, Latency: nf.Latency, Jitter: nf.Jitter, Rate: nf.Rate, Duplicate: nf.Duplicate, Reorder: nf.Reorder,
		ResetBytes: nf.ResetBytes, ResetAfter: nf.ResetAfter}
	if t.Mark != 0 {
		f.Service = MarkKey(t.Mark)
	} else if t.VIP.IsValid() {
		f.Service = ServiceKey{Protocol: protocolOf(t.Protocol), VIP: t.VIP}
	}
	if nf.Dir != nat.FaultBoth {
		f.Direction = nf.Dir.String()
	}
	return FaultStatus{Fault: f, Frames: v.Frames, Dropped: v.Dropped, Refused: v.Refused, Delayed: v.Delayed, Reset: v.Reset}, nil
}

// faultFields are the API's field names in a refusal, as this package's.
var faultFields = strings.NewReplacer(
	"fault.service:", "Fault.Service:", "fault.server:", "Fault.Server:", "fault.client:", "Fault.Client:",
	"fault.direction:", "Fault.Direction:", "fault.loss:", "Fault.Loss:", "fault.every:", "Fault.Every:",
	"fault.syn:", "Fault.SYN:", "fault.drop_fin:", "Fault.DropFIN:", "fault.latency:", "Fault.Latency:",
	"fault.jitter:", "Fault.Jitter:", "fault.rate:", "Fault.Rate:", "fault.duplicate:", "Fault.Duplicate:",
	"fault.reorder:", "Fault.Reorder:", "fault.reset_bytes:", "Fault.ResetBytes:", "fault.reset_after:", "Fault.ResetAfter:",
	// The checks between fields (nat.Fault.Check) name the one they refuse.
	"fault: jitter:", "Fault.Jitter:", "fault: rate:", "Fault.Rate:", "fault: syn:", "Fault.SYN:", "fault: blackhole:", "Fault.Blackhole:",
	"fault:", "Fault:", "faults[", "Faults[")

func faultError(what string, err error) error {
	return fmt.Errorf("tapvs: %s: %w", what, wrapMsg{faultFields.Replace(err.Error()), err})
}

// wrapMsg is err said with msg, still err for errors.Is.
type wrapMsg struct {
	msg string
	err error
}

func (w wrapMsg) Error() string { return w.msg }
func (w wrapMsg) Unwrap() error { return w.err }

// SetFault sets f, in place of the fault on its target if there is one.
// A bad field is refused, naming it (Fault.Loss), and nothing changes.
func (lb *LB) SetFault(f Fault) error {
	if _, err := lb.d.Faults().AddFault(f.spec()); err != nil {
		return faultError("set fault", err)
	}
	return nil
}

// SetFaults replaces every fault in force with fs (none: fs empty).
func (lb *LB) SetFaults(fs []Fault) error {
	specs := make([]api.Fault, len(fs))
	for i, f := range fs {
		specs[i] = f.spec()
	}
	if _, err := lb.d.Faults().SetFaults(specs); err != nil {
		return faultError("set faults", err)
	}
	return nil
}

// ClearFault clears the fault on target's target (its Service, Server or
// Client; the rest of it is not read).
func (lb *LB) ClearFault(target Fault) error {
	t := target.spec()
	if _, err := lb.d.Faults().RemoveFault(api.Fault{Service: t.Service, Server: t.Server, Client: t.Client}); err != nil {
		return faultError("clear fault", err)
	}
	return nil
}

// ClearFaults clears every fault.
func (lb *LB) ClearFaults() error { return lb.SetFaults(nil) }

// Faults lists the faults in force, in the order they were set, with what
// each has done.
func (lb *LB) Faults() []FaultStatus {
	var out []FaultStatus
	for _, v := range lb.d.Faults().Faults() {
		if fs, err := faultOf(v); err == nil {
			out = append(out, fs)
		}
	}
	return out
}
