// Package control is tapvs's control API: HTTP and JSON over a unix socket,
// for tapvsadm and for anything else that manages a running tapvs. Every
// change applies to the running data path at once and never drops the
// established connections of other services or servers.
package control

import (
	"errors"
	"fmt"
	"net/netip"

	"github.com/tapvs/tapvs/nat"
)

// ServiceKey names a service as ipvsadm does: protocol and VIP:port.
type ServiceKey struct {
	Protocol string `json:"protocol"` // "tcp" or "udp"
	Addr     string `json:"addr"`     // VIP:port
}

func (k ServiceKey) parse() (nat.Protocol, netip.AddrPort, error) {
	p, err := nat.ParseProtocol(k.Protocol)
	if err != nil {
		return 0, netip.AddrPort{}, err
	}
	ap, err := netip.ParseAddrPort(k.Addr)
	if err != nil {
		return 0, netip.AddrPort{}, fmt.Errorf("%q is not VIP:port", k.Addr)
	}
	return p, ap, nil
}

// ServiceSpec adds or edits a service (ipvsadm -A / -E).
type ServiceSpec struct {
	ServiceKey
	Name      string `json:"name,omitempty"`
	Scheduler string `json:"scheduler,omitempty"` // empty: wlc on add, unchanged on edit
	Synproxy  *bool  `json:"synproxy,omitempty"`  // nil: off on add, unchanged on edit
	// Persistence (-p) is not implemented: a non-zero value is refused.
	Persistent uint32 `json:"persistent,omitempty"`
	// EstablishedTimeout (-V), seconds; 0: unchanged.
	EstablishedTimeout uint32 `json:"established_timeout,omitempty"`
}

// DestSpec adds or edits a real server (ipvsadm -a / -e).
type DestSpec struct {
	Addr   string `json:"addr"`             // RIP:port
	Weight *int   `json:"weight,omitempty"` // nil: 1 on add, unchanged on edit
	// Forward is the forwarding method; tapvs does FULLNAT only ("fullnat",
	// ipvsadm's -b). Empty means fullnat.
	Forward string `json:"forward,omitempty"`
}

// Batch is a list of operations applied as one (POST /v1/batch).
type Batch struct {
	Ops []Op `json:"ops"`
}

// Service is a service as listed.
type Service struct {
	ServiceKey
	Name       string       `json:"name"`
	Scheduler  string       `json:"scheduler"`
	Synproxy   bool         `json:"synproxy"`
	Timeouts   Timeouts     `json:"timeouts"`
	Dests      []Dest       `json:"dests"`
	LocalAddrs []LocalAddr  `json:"local_addrs"`
	Stats      nat.Traffic  `json:"stats"`
	Rate       nat.Rate     `json:"rate"`
	Health     []HealthView `json:"health,omitempty"`
}

// Dest is a real server as listed.
type Dest struct {
	Addr       string      `json:"addr"`
	Forward    string      `json:"forward"`
	Weight     int         `json:"weight"`
	ActiveConn int64       `json:"active_conns"`
	InActConn  int64       `json:"inactive_conns"`
	Stats      nat.Traffic `json:"stats"`
	Rate       nat.Rate    `json:"rate"`
}

// LocalAddr is a LIP as listed (ipvsadm -G).
type LocalAddr struct {
	Addr      string `json:"addr"`
	Conns     int64  `json:"conns"`
	Conflicts uint64 `json:"conflicts"`
	Exhausted uint64 `json:"exhausted"`
}

// HealthView is a real server's health as a checker sees it.
type HealthView struct {
	Dest    string `json:"dest"`
	Healthy bool   `json:"healthy"`
	Reason  string `json:"reason,omitempty"`
}

// Timeouts in seconds, as ipvsadm --set shows them.
type Timeouts struct {
	TCP    uint32 `json:"tcp"`
	TCPFin uint32 `json:"tcpfin"`
	UDP    uint32 `json:"udp"`
}

// Conn is a connection as listed (ipvsadm -lnc).
type Conn struct {
	Protocol    string `json:"protocol"`
	State       string `json:"state"`
	ExpiresMs   int64  `json:"expires_ms"`
	Source      string `json:"source"`
	Virtual     string `json:"virtual"`
	Local       string `json:"local"`
	Destination string `json:"destination"`
}

// Info describes the running tapvs.
type Info struct {
	Version  string `json:"version"`
	Size     int    `json:"size"` // connection table limit
	Conns    int    `json:"conns"`
	Services int    `json:"services"`
}

// Error codes; tapvsadm turns them into ipvsadm's messages.
const (
	CodeNoService     = "service_not_defined"
	CodeServiceExists = "service_exists"
	CodeNoDest        = "no_such_destination"
	CodeDestExists    = "destination_exists"
	CodeNoLocalAddr   = "no_such_local_address"
	CodeLocalExists   = "local_address_exists"
	CodeInvalid       = "invalid"
	CodeInternal      = "internal"
)

// Error is the API's error body.
type Error struct {
	Code    string `json:"code"`
	Message string `json:"error"`
	// Op is, for a refused batch, which operation (from 0) was refused.
	Op *int `json:"op,omitempty"`
}

func (e *Error) Error() string { return e.Message }

func codeOf(err error) (string, int) {
	switch {
	case errors.Is(err, nat.ErrNoService):
		return CodeNoService, 404
	case errors.Is(err, nat.ErrServiceExists):
		return CodeServiceExists, 409
	case errors.Is(err, nat.ErrNoDest):
		return CodeNoDest, 404
	case errors.Is(err, nat.ErrDestExists):
		return CodeDestExists, 409
	case errors.Is(err, nat.ErrNoLocalAddr):
		return CodeNoLocalAddr, 404
	case errors.Is(err, nat.ErrLocalAddrExists):
		return CodeLocalExists, 409
	}
	return CodeInvalid, 400
}
