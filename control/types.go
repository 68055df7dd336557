// Package control is tapvs's control plane: the Manager applies
// ipvsadm-style changes to the running balancer, each as one transaction,
// and the Server serves it as the HTTP API over a unix socket whose JSON
// types and client are package control/api. Strings from the wire are
// parsed at the HTTP edge (edge.go); the Manager takes typed keys. Every
// change applies to the running data path at once and never drops the
// established connections of other services or servers.
package control

import (
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"time"

	"github.com/tapvs/tapvs/control/api"
	"github.com/tapvs/tapvs/nat"
)

// ServiceKey names a service as ipvsadm does: protocol and VIP:port, or
// a match service's mark alone (match.go).
type ServiceKey struct {
	Protocol nat.Protocol
	Addr     netip.AddrPort // VIP:port
	Mark     uint32         // a match service's; Protocol and Addr are then zero
}

// String is the key as the API writes it: "tcp 10.0.0.1:80", "fwm 1".
func (k ServiceKey) String() string {
	if k.Mark != 0 {
		return fmt.Sprintf("fwm %d", k.Mark)
	}
	return strings.ToLower(k.Protocol.String()) + " " + k.Addr.String()
}

// ServiceSpec adds or edits a service (ipvsadm -A / -E).
type ServiceSpec struct {
	ServiceKey
	Name      string
	Scheduler string // empty: wlc on add, unchanged on edit
	// SchedFlags names the scheduler's flags (sh-port...); nil: none on
	// add, on edit unchanged, or none when the scheduler changes.
	SchedFlags *[]string
	Synproxy   *bool // nil: off on add, unchanged on edit
	// ClientAddr is how the real servers learn the client's address; nil:
	// none on add, unchanged on edit.
	ClientAddr *nat.ClientAddr
	// Timestamps is what plain TCP connections do with the client's
	// timestamps; nil: translate on add, unchanged on edit.
	Timestamps *nat.Timestamps
	// EstablishedTimeout (-V); 0: the default on add, unchanged on edit.
	EstablishedTimeout time.Duration
	Limits             LimitsSpec
	// Persistent is the persistence timeout (-p; 0 turns it off), and
	// Netmask the prefix length of the client network a template covers
	// (-M); nil: none on add, unchanged on edit.
	Persistent *time.Duration
	Netmask    *int
}

// LimitsSpec changes a service's limits: a nil field is unchanged on edit,
// no limit on add.
type LimitsSpec struct {
	SourceCPS, SourceConns, HalfOpen *int
}

// DestSpec adds or edits a real server (ipvsadm -a / -e).
type DestSpec struct {
	Addr   netip.AddrPort // RIP:port
	Weight *int           // nil: 1 on add, unchanged on edit
	// UThreshold and LThreshold are the connection thresholds (-x, -y:
	// nat.Thresholds); nil: none on add, unchanged on edit.
	UThreshold, LThreshold *uint32
}

// Timeouts are ipvsadm --set's three; 0 leaves one as it is.
type Timeouts struct {
	TCP, TCPFin, UDP time.Duration
}

// OpKind is what an Op does.
type OpKind uint8

// The operations, one for each ipvsadm command that changes the rules.
const (
	OpAddService OpKind = iota + 1 // the zero OpKind is none, so a forgotten Kind is refused
	OpEditService
	OpDeleteService
	OpClear
	OpAddDest
	OpEditDest
	OpDeleteDest
	OpAddLocalAddr
	OpDeleteLocalAddr
	OpSetTimeouts
	OpAddDeny
	OpDeleteDeny
	OpAddAllow
	OpDeleteAllow
)

// Op is one control operation: Batch applies a list of them as one.
type Op struct {
	Kind OpKind
	// Service is the service the operation is on (every kind but OpClear
	// and OpSetTimeouts); for OpAddService and OpEditService, the rest of
	// it too.
	Service   ServiceSpec
	Dest      DestSpec     // OpAddDest, OpEditDest, OpDeleteDest
	LocalAddr netip.Addr   // OpAddLocalAddr, OpDeleteLocalAddr
	Timeouts  Timeouts     // OpSetTimeouts
	Prefix    netip.Prefix // OpAddDeny, OpDeleteDeny, OpAddAllow, OpDeleteAllow
}

// BatchError says which operation of a batch was refused; none was applied.
type BatchError struct {
	Index int // from 0
	Err   error
}

func (e *BatchError) Error() string {
	return fmt.Sprintf("operation %d: %v (nothing was applied)", e.Index+1, e.Err)
}
func (e *BatchError) Unwrap() error { return e.Err }

// codeOf is the API's code and HTTP status for a refusal.
func codeOf(err error) (string, int) {
	switch {
	case errors.Is(err, nat.ErrNoService):
		return api.CodeNoService, 404
	case errors.Is(err, nat.ErrServiceExists):
		return api.CodeServiceExists, 409
	case errors.Is(err, nat.ErrNoDest):
		return api.CodeNoDest, 404
	case errors.Is(err, nat.ErrDestExists):
		return api.CodeDestExists, 409
	case errors.Is(err, nat.ErrNoLocalAddr):
		return api.CodeNoLocalAddr, 404
	case errors.Is(err, nat.ErrLocalAddrExists):
		return api.CodeLocalExists, 409
	case errors.Is(err, ErrNoFault):
		return api.CodeNoFault, 404
	}
	return api.CodeInvalid, 400
}
