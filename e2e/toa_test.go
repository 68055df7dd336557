package e2e

import (
	"encoding/binary"
	"fmt"
	"net/netip"
	"slices"
	"testing"
	"time"

	"github.com/google/gopacket"
	"github.com/google/gopacket/layers"

	"github.com/tapvs/tapvs/csum"
	"github.com/tapvs/tapvs/lab"
)

// toaServices are HTTP and bulk to the first real server, each adding TOA,
// with SYNPROXY or without (%t).
const toaServices = `
  - {name: web-toa, vip: 172.25.254.100, port: 80, scheduler: rr, synproxy: %[1]t, client_address: toa, local_addresses: [172.25.84.10], real_servers: [{address: 10.20.1.2, port: 80}]}
  - {name: bulk-toa, vip: 172.25.254.100, port: 9000, scheduler: rr, synproxy: %[1]t, client_address: toa, local_addresses: [172.25.84.10], real_servers: [{address: 10.20.1.2, port: 9000}]}
`

// The real server's capture shows, on the client segment that completes
// its handshake (the first after its SYN-ACK: ack = its ISN + 1), a TOA
// option first, with the client's own address and port; every segment
// that carries one names the client; every segment's checksums verify;
// bulk data crosses intact both ways. With and without SYNPROXY, with
// TAP offload (TSO super-frames, partial checksums) and without.
func TestTOA(t *testing.T) {
	for _, tc := range []struct {
		synproxy, noOffload bool
	}{{false, false}, {true, false}, {false, true}, {true, true}} {
		t.Run(fmt.Sprintf("synproxy=%t/offload=%t", tc.synproxy, !tc.noOffload), func(t *testing.T) {
			e := setupWith(t, topoOpts{queues: 1, noOffload: tc.noOffload}, fmt.Sprintf(toaServices, tc.synproxy), "")
			capRS := startCapture(t, e.top.RS[0], "eth0")
			web := netip.AddrPortFrom(lab.VIP, lab.HTTPPort)
			var clients []netip.AddrPort
			for range 3 {
				clients = append(clients, netip.MustParseAddrPort(getFrom(t, e, web)))
			}
			bulk := netip.AddrPortFrom(lab.VIP, lab.BulkPort)
			if _, err := lab.Upload(e.ctx(time.Minute), e.top.Client, bulk, 8<<20); err != nil {
				t.Fatal(err)
			}
			if _, err := lab.Download(e.ctx(time.Minute), e.top.Client, bulk, 8<<20); err != nil {
				t.Fatal(err)
			}
			if !eventually(5*time.Second, func() bool { return tcpFlowsClosed(capRS.packets(), lab.HTTPPort) }) {
				t.Fatal("the HTTP connections' closes did not all reach the capture within 5s")
			}
			capRS.stop()
			ps := capRS.packets()

			// Every segment at the server: IPv4 and TCP checksums from scratch.
			partial := checkTCPSums(t, ps, tc.noOffload)

			// The HTTP connections: the segment completing each handshake.
			told := toldAtHandshakes(t, ps, lab.RS1, toaOf)
			slices.SortFunc(told, netip.AddrPort.Compare)
			slices.SortFunc(clients, netip.AddrPort.Compare)
			if !slices.Equal(told, clients) {
				t.Fatalf("the server was told %v, the clients were %v", told, clients)
			}

			// The bulk connections: every TOA names the client.
			n := 0
			for _, p := range tcpPort(ps, lab.BulkPort) {
				tcp := p.Layer(layers.LayerTypeTCP).(*layers.TCP)
				if a, ok := toaOf(tcp); ok {
					n++
					if a.Addr() != lab.ClientAddr.Addr() {
						t.Fatalf("bulk segment with TOA %v: not the client %v", a, lab.ClientAddr.Addr())
					}
				}
			}
			ins, noRoom := e.d.Balancer.Stats.TOA()
			t.Logf("TOA inserted %d, no room %d; bulk segments with TOA captured %d; partial checksums seen %d", ins, noRoom, n, partial)
			if n == 0 || ins == 0 || noRoom != 0 {
				t.Fatalf("TOA inserted %d, no room %d, %d bulk segments with TOA captured", ins, noRoom, n)
			}
		})
	}
}

// toaOf reads a TCP header's first option as TOA (kind 254, length 8).
func toaOf(tcp *layers.TCP) (netip.AddrPort, bool) {
	if len(tcp.Options) == 0 {
		return netip.AddrPort{}, false
	}
	o := tcp.Options[0]
	if o.OptionType != 254 || o.OptionLength != 8 || len(o.OptionData) != 6 {
		return netip.AddrPort{}, false
	}
	return netip.AddrPortFrom(netip.AddrFrom4([4]byte(o.OptionData[2:])), binary.BigEndian.Uint16(o.OptionData)), true
}

// checkTCPSums verifies the IPv4 header checksum and the TCP checksum of
// every TCP segment captured at the real server, recomputed from the
// bytes. A segment may hold a partial checksum (the kernel finishes it
// when the segment leaves a real NIC, never on veths): it must then be
// exactly the pseudo-header sum for the segment's length. That is so of
// the server's own segments, captured on their way out, and with offload
// of what tapvs sends it; without offload (full), every segment from tapvs
// has a full checksum and none passes the MTU. It returns how many partial
// checksums it saw.
func checkTCPSums(t *testing.T, ps []gopacket.Packet, full bool) (partial int) {
	t.Helper()
	n := 0
	for i, p := range ps {
		ipl, ok := p.Layer(layers.LayerTypeIPv4).(*layers.IPv4)
		if !ok || ipl.Protocol != layers.IPProtocolTCP {
			continue
		}
		n++
		raw := p.Data()[14:]
		ihl := int(raw[0]&0x0f) * 4
		tot := int(binary.BigEndian.Uint16(raw[2:]))
		if csum.Checksum(raw[:ihl], 0) != 0 {
			t.Fatalf("segment %d: IPv4 header checksum does not verify", i)
		}
		if tot > len(raw) {
			t.Fatalf("segment %d: IP length %d past the %d bytes captured", i, tot, len(raw))
		}
		strict := full && netip.AddrFrom4([4]byte(raw[12:16])) != lab.RS1
		if strict && tot > 1500 {
			t.Fatalf("segment %d: %d bytes past the MTU on plain TAPs", i, tot)
		}
		l4 := raw[ihl:tot]
		ps := csum.PseudoV4(raw[12:16], raw[16:20], 6, len(l4))
		if csum.Checksum(l4, ps) == 0 {
			continue
		}
		if !strict && binary.BigEndian.Uint16(l4[16:]) == csum.Fold(ps) {
			partial++
			continue
		}
		t.Fatalf("segment %d (%d bytes, flags %#x, data offset %d): TCP checksum does not verify", i, tot, l4[13], l4[12]>>4)
	}
	if n == 0 {
		t.Fatal("no TCP segment captured")
	}
	return partial
}

// toldAtHandshakes reads, in a capture at real server rs on its HTTP
// port, the segment that completes each handshake (the first from a LIP
// port acking the server's ISN + 1) and returns the client each one's TOA
// names (toa reads it: toaOf, toa6Of). A completing segment without one
// fails the test.
func toldAtHandshakes(t *testing.T, ps []gopacket.Packet, rs netip.Addr, toa func(*layers.TCP) (netip.AddrPort, bool)) []netip.AddrPort {
	t.Helper()
	var told []netip.AddrPort
	isn := map[uint16]uint32{} // by the LIP's port
	done := map[uint16]bool{}
	for _, p := range tcpPort(ps, lab.HTTPPort) {
		nl := p.NetworkLayer()
		if nl == nil {
			continue
		}
		src, _ := netip.AddrFromSlice(nl.NetworkFlow().Src().Raw())
		tcp := p.Layer(layers.LayerTypeTCP).(*layers.TCP)
		if src == rs {
			if tcp.SYN && tcp.ACK {
				isn[uint16(tcp.DstPort)] = tcp.Seq
			}
			continue
		}
		lport := uint16(tcp.SrcPort)
		s, ok := isn[lport]
		if !ok || done[lport] || tcp.SYN || !tcp.ACK || tcp.Ack != s+1 {
			continue
		}
		done[lport] = true
		a, ok := toa(tcp)
		if !ok {
			t.Fatalf("the segment completing the handshake of LIP port %d carries no TOA of the client's family first: %v", lport, tcp.Options)
		}
		told = append(told, a)
	}
	return told
}
