package bgp

import (
	"context"
	"net/netip"
	"slices"
	"time"

	api "github.com/osrg/gobgp/v4/api"
)

// Status is what the speaker is doing: its peers and the routes it
// announces, for the API, tapvsadm and /metrics.
type Status struct {
	ASN      uint32
	RouterID netip.Addr
	Peers    []PeerStatus
	Routes   []Route
	// Announced and Withdrawn count route changes since start: each
	// prefix announced or withdrawn once per change, whatever the number
	// of peers.
	Announced, Withdrawn uint64
}

// PeerStatus is one peer's session.
type PeerStatus struct {
	Address netip.Addr
	ASN     uint32
	State   string    // RFC 4271's state, lower case: idle, connect, active, opensent, openconfirm, established
	Since   time.Time // when it entered State
	// Changes counts state changes; Established, sessions that came up.
	Changes, Established uint64
	// Messages received and sent on the sessions so far (GoBGP's counts).
	Received, Sent uint64
	// LastError is why the last session ended, as GoBGP says it ("" if none).
	LastError string
}

// Status reads the speaker's state.
func (s *Speaker) Status() Status {
	msgs := map[string][2]uint64{}
	reasons := map[string]string{}
	if !s.closed.Load() {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		_ = s.srv.ListPeer(ctx, &api.ListPeerRequest{}, func(p *api.Peer) {
			if p.State == nil {
				return
			}
			var n [2]uint64
			if m := p.State.Messages; m != nil {
				if m.Received != nil {
					n[0] = m.Received.Total
				}
				if m.Sent != nil {
					n[1] = m.Sent.Total
				}
			}
			msgs[p.State.NeighborAddress] = n
			reasons[p.State.NeighborAddress] = p.State.DisconnectMessage
		})
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	st := Status{ASN: s.cfg.ASN, RouterID: s.cfg.RouterID, Announced: s.announced.Load(), Withdrawn: s.withdrawn.Load()}
	for addr, p := range s.peers {
		m := msgs[addr.String()]
		st.Peers = append(st.Peers, PeerStatus{Address: addr, ASN: p.conf.ASN, State: p.state, Since: p.since,
			Changes: p.changes, Established: p.ups, Received: m[0], Sent: m[1], LastError: reasons[addr.String()]})
	}
	slices.SortFunc(st.Peers, func(a, b PeerStatus) int { return a.Address.Compare(b.Address) })
	for _, r := range s.routes {
		st.Routes = append(st.Routes, r)
	}
	slices.SortFunc(st.Routes, func(a, b Route) int {
		if c := a.Prefix.Addr().Compare(b.Prefix.Addr()); c != 0 {
			return c
		}
		return a.Prefix.Bits() - b.Prefix.Bits()
	})
	return st
}
