package netstack

import (
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/network/arp"
	"gvisor.dev/gvisor/pkg/tcpip/network/ipv4"
	"gvisor.dev/gvisor/pkg/tcpip/network/ipv6"
	"gvisor.dev/gvisor/pkg/tcpip/stack"
	"gvisor.dev/gvisor/pkg/tcpip/transport/icmp"
	"gvisor.dev/gvisor/pkg/tcpip/transport/tcp"
	"gvisor.dev/gvisor/pkg/tcpip/transport/udp"

	"github.com/tapvs/tapvs/internal/uring"
	"github.com/tapvs/tapvs/nat"
	"github.com/tapvs/tapvs/tun"
)

const (
	ClientNIC tcpip.NICID = 1
	ServerNIC tcpip.NICID = 2
)

// Route is a route out of one side: to Dst, through Via when it is set,
// on-link otherwise.
type Route struct {
	Dst netip.Prefix
	Via netip.Addr
}

// NICConfig is one side of the stack.
type NICConfig struct {
	Devs    []tun.Device
	MTU     uint32
	MAC     [6]byte
	Address netip.Prefix // the side's own address; its subnet is on-link (VIPs and LIPs: SetAddresses)
	// Address6 is the side's own IPv6 address (optional); its prefix is
	// on-link, and neighbour discovery answers for IPv6 VIPs and LIPs.
	Address6 netip.Prefix
	Routes   []Route
}

// Stack is the gVisor stack with tapvs's two sides.
type Stack struct {
	s              *stack.Stack
	Client, Server *Endpoint
	log            *slog.Logger

	resolveReq chan *nat.Dest
	bal        *nat.Balancer
	addrMu     sync.Mutex
	ownClient  [2]netip.Addr // the side's own IPv4 and IPv6 addresses: SetAddresses leaves them alone
	ownServer  [2]netip.Addr
	stop       chan struct{}
	polling    bool
	rings      []*ringPoller // the io_uring pollers, when they run: Pause asks them to stop reading
	pollSleeps atomic.Uint64
	done       sync.WaitGroup

	failOnce sync.Once
	failed   chan struct{} // closed with the first reader that fails
	err      error         // why: set before failed is closed

	// The handoff receiver's (HandedOver: one goroutine at a time).
	handoffQueue   int
	handoffBuf     [Headroom + 1<<16]byte
	handoffFrame   nat.Frame
	handoffDropped atomic.Uint64 // super-frames handed over to plain TAPs
}

// ipv6Options make the stack an IPv6 neighbour and nothing more: it answers
// neighbour solicitations for its addresses and resolves next hops, but it
// is not a host that configures itself. No duplicate address detection
// (VIPs and LIPs are the operator's, and an address must answer the moment
// SetAddresses adds it, not a second later), no router solicitations, no
// router advertisements heeded (no SLAAC, no default routers or prefixes
// learnt: routes are configured), no MLD reports.
//
// Nor a link-local address: gVisor answers a solicitation for a global or
// ULA address from that address (RFC 4861 7.2.4), whatever the solicitor's
// source, link-local included, and solicits from the route's own address,
// so neighbour discovery needs none. Only router solicitations and MLD
// reports would, and both are off. Without one, the NIC's addresses are
// exactly the configured ones, which SetAddresses relies on.
var ipv6Options = ipv6.Options{
	NDPConfigs: ipv6.NDPConfigurations{
		MaxRtrSolicitations: 0,
		HandleRAs:           ipv6.HandlingRAsDisabled,
	},
	DADConfigs:       stack.DADConfigurations{DupAddrDetectTransmits: 0},
	AutoGenLinkLocal: false,
	MLD:              ipv6.MLDOptions{Enabled: false},
}

// New builds the stack. Frames start flowing at Start.
func New(bal *nat.Balancer, client, server NICConfig, log *slog.Logger) (*Stack, error) {
	s := stack.New(stack.Options{
		NetworkProtocols: []stack.NetworkProtocolFactory{ipv4.NewProtocol, arp.NewProtocol, ipv6.NewProtocolWithOptions(ipv6Options)},
		// Echo requests (ping, ping6) are answered by the network
		// protocols themselves; the ICMP transports are the stack's
		// own ICMP endpoints, for both families alike.
		TransportProtocols: []stack.TransportProtocolFactory{tcp.NewProtocol, udp.NewProtocol,
			icmp.NewProtocol4, icmp.NewProtocol6},
	})
	st := &Stack{s: s, log: log, bal: bal, resolveReq: make(chan *nat.Dest, 64), stop: make(chan struct{}), failed: make(chan struct{}),
		ownClient: [2]netip.Addr{client.Address.Addr(), client.Address6.Addr()},
		ownServer: [2]netip.Addr{server.Address.Addr(), server.Address6.Addr()}}
	st.Client = newEndpoint(nat.ClientSide, client.Devs, client.MTU, client.MAC, bal, log)
	st.Server = newEndpoint(nat.ServerSide, server.Devs, server.MTU, server.MAC, bal, log)
	st.Client.peer, st.Server.peer = st.Server, st.Client
	st.Client.fail, st.Server.fail = st.fail, st.fail
	st.Server.qbase = len(client.Devs)
	if len(client.Devs)+len(server.Devs) > nat.MaxQueues {
		return nil, fmt.Errorf("%d queues in all: at most %d", len(client.Devs)+len(server.Devs), nat.MaxQueues)
	}
	var routes []tcpip.Route
	for _, side := range []struct {
		id  tcpip.NICID
		ep  *Endpoint
		cfg NICConfig
	}{{ClientNIC, st.Client, client}, {ServerNIC, st.Server, server}} {
		if err := s.CreateNIC(side.id, side.ep); err != nil {
			s.Destroy()
			return nil, fmt.Errorf("%s NIC: %s", side.ep.side, err)
		}
		if a6 := side.cfg.Address6; a6.IsValid() && !a6.Addr().Is6() {
			s.Destroy()
			return nil, fmt.Errorf("%s NIC: IPv6 address %s is not IPv6", side.ep.side, a6)
		}
		// The side's own addresses, each with its subnet on-link.
		for _, a := range []netip.Prefix{side.cfg.Address, side.cfg.Address6} {
			if !a.IsValid() {
				continue
			}
			pa := tcpip.ProtocolAddress{
				Protocol:          protocol(a.Addr()),
				AddressWithPrefix: tcpip.AddressWithPrefix{Address: toTCPIP(a.Addr()), PrefixLen: a.Bits()},
			}
			if err := s.AddProtocolAddress(side.id, pa, stack.AddressProperties{}); err != nil {
				s.Destroy()
				return nil, fmt.Errorf("%s NIC: address %s: %s", side.ep.side, a, err)
			}
			routes = append(routes, tcpip.Route{Destination: subnet(a.Masked()), NIC: side.id})
		}
		for _, r := range side.cfg.Routes {
			tr := tcpip.Route{Destination: subnet(r.Dst), NIC: side.id}
			if r.Via.IsValid() {
				// A gateway of the other family would never be
				// resolved: the route's destination picks the
				// protocol that resolves its next hop.
				if r.Via.Unmap().Is4() != r.Dst.Addr().Unmap().Is4() {
					s.Destroy()
					return nil, fmt.Errorf("%s NIC: route to %s via %s: the gateway is not of the destination's family", side.ep.side, r.Dst, r.Via)
				}
				tr.Gateway = toTCPIP(r.Via)
			}
			routes = append(routes, tr)
		}
	}
	s.SetRouteTable(routes)
	// The balancer's way out beyond a reader's batch: next hops to resolve,
	// and frames its timers make.
	bal.Attach(st)
	return st, nil
}

var _ nat.Link = (*Stack)(nil)

// Start runs the readers and the neighbor resolver. With busyPoll > 0 one
// thread polls every queue instead (see poll.go), sleeping after busyPoll
// without a frame.
func (st *Stack) Start(busyPoll time.Duration) error {
	return st.StartIO(IOSyscalls, busyPoll, 0, nil)
}

// IOMode is how the stack reads and writes its TAPs (interfaces.io).
type IOMode string

// The I/O modes.
const (
	// IOSyscalls: a read and a write system call per frame, by a reader
	// per queue or, with busy polling, by one polling thread.
	IOSyscalls IOMode = "syscalls"
	// IOUring: an io_uring poller reads and writes every queue; a kernel
	// or seccomp profile that refuses io_uring fails the start.
	IOUring IOMode = "uring"
	// IOAuto: IOUring where io_uring is allowed, else IOSyscalls, said
	// once in the log with the cause.
	IOAuto IOMode = "auto"
)

// StartIO is Start with the I/O mode: with io_uring, busyPoll is how long
// a poller spins after its last frame before it sleeps, pollers how many
// pollers share the queues (0: autoPollers), and groups, when set, which
// queue indexes each poller reads (pollPlan).
func (st *Stack) StartIO(mode IOMode, busyPoll time.Duration, pollers int, groups [][]int) error {
	switch mode {
	case IOUring, IOAuto:
		err := st.startUring(busyPoll, pollers, groups)
		var re *uring.RefusedError
		switch {
		case err == nil:
			return st.startResolver()
		case mode == IOAuto && uring.Refused(err) && errors.As(err, &re):
			st.log.Warn("TAP I/O: io_uring refused, using read/write system calls", "err", err, "hint", re.Hint)
		default:
			return err
		}
	case IOSyscalls:
	default:
		return fmt.Errorf("I/O mode %q is not one of auto, uring, syscalls", mode)
	}
	if busyPoll > 0 {
		if err := st.startPolling(busyPoll); err != nil {
			return err
		}
	} else {
		st.Client.start()
		st.Server.start()
	}
	return st.startResolver()
}

// startResolver runs the next-hop resolver, the last of Start.
func (st *Stack) startResolver() error {
	st.done.Add(1)
	go func() {
		defer st.done.Done()
		st.resolver()
	}()
	return nil
}

// Close stops everything: closing the devices ends the readers, and the TAPs
// go away with their last file descriptor.
func (st *Stack) Close() {
	close(st.stop)
	if st.polling {
		// The poller reads the queues' descriptors directly: it must be
		// gone before they are closed.
		st.done.Wait()
	}
	for _, e := range []*Endpoint{st.Client, st.Server} {
		for _, d := range e.devs {
			d.Close()
		}
	}
	st.Client.Wait()
	st.Server.Wait()
	st.done.Wait()
	st.s.Close()
	st.s.Wait()
}

// fail records that a reader ended on an error it cannot read past: the
// first such error is the stack's, and Failed is closed.
func (st *Stack) fail(err error) {
	st.log.Error("reader stopped: its TAP failed; tapvs cannot forward through it", "err", err)
	st.failOnce.Do(func() {
		st.err = err
		close(st.failed)
	})
}

// Failed is closed when a reader has ended on an error it cannot read past
// (its TAP deleted under tapvs): the data path through that queue is gone
// for good, and Err says why.
func (st *Stack) Failed() <-chan struct{} { return st.failed }

// Err is the error that closed Failed, or nil while it is open.
func (st *Stack) Err() error {
	select {
	case <-st.failed:
		return st.err
	default:
		return nil
	}
}

// SetAddresses makes the extra addresses (VIPs on the client side, LIPs on the
// server side) of a side exactly want, IPv4 and IPv6 alike: ARP and
// neighbour discovery answer for them and no other. The side's own
// addresses are left alone.
func (st *Stack) SetAddresses(side nat.Side, want []netip.Addr) error {
	id, own := ClientNIC, st.ownClient
	if side == nat.ServerSide {
		id, own = ServerNIC, st.ownServer
	}
	isOwn := func(a netip.Addr) bool { return a == own[0] || a == own[1] }
	st.addrMu.Lock()
	defer st.addrMu.Unlock()
	have := map[netip.Addr]bool{}
	for _, pa := range st.s.AllAddresses()[id] {
		a, ok := netip.AddrFromSlice(pa.AddressWithPrefix.Address.AsSlice())
		// A link-local address is not one SetAddresses adds (the stack
		// makes none, see ipv6Options): never one to take away.
		if ok && !isOwn(a) && !a.IsLinkLocalUnicast() {
			have[a] = true
		}
	}
	var errs []error
	for _, a := range want {
		a = a.Unmap() // an IPv4 address in the balancer's 16-byte form is IPv4
		if have[a] || isOwn(a) {
			delete(have, a)
			continue
		}
		// A host address: the subnet around it is the side's own
		// address's (or a route's), not the VIP's or LIP's.
		pa := tcpip.ProtocolAddress{Protocol: protocol(a), AddressWithPrefix: tcpip.AddressWithPrefix{Address: toTCPIP(a), PrefixLen: a.BitLen()}}
		if err := st.s.AddProtocolAddress(id, pa, stack.AddressProperties{}); err != nil {
			errs = append(errs, fmt.Errorf("%s side: add %s: %s", side, a, err))
		}
	}
	for a := range have {
		if err := st.s.RemoveAddress(id, toTCPIP(a)); err != nil {
			errs = append(errs, fmt.Errorf("%s side: remove %s: %s", side, a, err))
		}
	}
	return errors.Join(errs...)
}

// ChangeAddresses adds and removes the VIPs and LIPs the balancer's
// changes name (nat.Balancer.Changes), as SetAddresses would with the
// whole lists but in the time of the changes: an address already there
// (or already gone) is left as it is, and the sides' own addresses are
// never touched.
func (st *Stack) ChangeAddresses(changes []nat.Change) error {
	st.addrMu.Lock()
	defer st.addrMu.Unlock()
	var errs []error
	for _, c := range changes {
		if c.Dest != nil {
			continue
		}
		id, own := ClientNIC, st.ownClient
		if c.Side == nat.ServerSide {
			id, own = ServerNIC, st.ownServer
		}
		a := c.Addr.Unmap()
		if a == own[0] || a == own[1] {
			continue
		}
		if c.Added {
			pa := tcpip.ProtocolAddress{Protocol: protocol(a), AddressWithPrefix: tcpip.AddressWithPrefix{Address: toTCPIP(a), PrefixLen: a.BitLen()}}
			if err := st.s.AddProtocolAddress(id, pa, stack.AddressProperties{}); err != nil {
				if _, dup := err.(*tcpip.ErrDuplicateAddress); !dup {
					errs = append(errs, fmt.Errorf("%s side: add %s: %s", c.Side, a, err))
				}
			}
			continue
		}
		if err := st.s.RemoveAddress(id, toTCPIP(a)); err != nil {
			if _, gone := err.(*tcpip.ErrBadLocalAddress); !gone {
				errs = append(errs, fmt.Errorf("%s side: remove %s: %s", c.Side, a, err))
			}
		}
	}
	return errors.Join(errs...)
}

// SetOwnPorts is the ephemeral port range of the stack's own connections
// (health checks from LIPs): it must not overlap the balancer's local ports.
func (st *Stack) SetOwnPorts(lo, hi uint16) error {
	if err := st.s.SetPortRange(lo, hi); err != nil {
		return fmt.Errorf("stack port range %d-%d: %s", lo, hi, err)
	}
	return nil
}

// Stack is the gVisor stack, for tapvs's own connections (health checks).
func (st *Stack) Stack() *stack.Stack { return st.s }

// Send sends a frame the balancer kept (nat.Link: a fault's delay line),
// behind its virtio-net header, out of side out.
func (st *Stack) Send(out nat.Side, frame []byte) {
	if out == nat.ClientSide {
		st.Client.send(frame)
	} else {
		st.Server.send(frame)
	}
}

// Transmit sends a frame a balancer timer made out of side out (nat.Link).
func (st *Stack) Transmit(out nat.Side, frame []byte) {
	if out == nat.ClientSide {
		st.Client.Transmit(frame)
	} else {
		st.Server.Transmit(frame)
	}
}

// protocol is the network protocol of an address: IPv4 for an IPv4 address
// in any form (mapped into IPv6 too), IPv6 otherwise.
func protocol(a netip.Addr) tcpip.NetworkProtocolNumber {
	if a.Unmap().Is4() {
		return ipv4.ProtocolNumber
	}
	return ipv6.ProtocolNumber
}

// toTCPIP is a in gVisor's form: 4 bytes for IPv4 (mapped or not), 16 for
// IPv6.
func toTCPIP(a netip.Addr) tcpip.Address {
	a = a.Unmap()
	if a.Is4() {
		return tcpip.AddrFrom4(a.As4())
	}
	return tcpip.AddrFrom16(a.As16())
}

func subnet(p netip.Prefix) tcpip.Subnet {
	return tcpip.AddressWithPrefix{Address: toTCPIP(p.Addr()), PrefixLen: p.Bits()}.Subnet()
}
