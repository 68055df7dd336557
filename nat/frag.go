package nat

import (
	"crypto/rand"
	"encoding/binary"
	"sync"

	"github.com/tapvs/tapvs/frag"
	"github.com/tapvs/tapvs/tun"
	"github.com/tapvs/tapvs/wire"
)

// Fragments to a VIP (client side) and to a LIP (server side: a real
// server's replies) are reassembled (package frag, bounded as Linux's
// ipfrag_high_thresh and ipfrag_time), and the whole datagram takes the
// path any other packet takes: matched, rewritten, checksums updated over
// the whole. On its way out it is cut again, as Linux forwards a datagram
// netfilter reassembled (ip_do_fragment with frag_max_size): fragments no
// longer than the largest that came in, nor than the way out's MTU
// (Config.ServerMTU, Config.ClientMTU). tapvs is the source of the rewritten
// datagram (the LIP toward a server, the VIP toward a client), so it gives
// it an identification of its own: the client's would not be unique among
// the datagrams of all clients from one LIP. IPv4 fragments leave without
// DF (a fragment with DF set is dropped by nobody and means nothing once
// reassembled; Linux would answer a fragmentation needed when the largest
// fragment passes the MTU: tapvs cuts it to the MTU instead). IPv6 fragments
// carry a Fragment header: tapvs, as the datagram's source on that side,
// may fragment it (RFC 8200 4.5). The fragments leave by Link.Send, not in
// the reader's batch, and a fault's delay line does not hold them.

// fragDrops is the drop reason of each of the reassembler's refusals.
var fragDrops = [frag.NumReasons]DropReason{
	frag.Overlap:   DropFragOverlap,
	frag.Duplicate: DropFragDuplicate,
	frag.Tiny:      DropFragTiny,
	frag.TooBig:    DropFragTooBig,
	frag.Memory:    DropFragMemory,
	frag.Source:    DropFragSource,
	frag.TooMany:   DropFragTooMany,
	frag.Malformed: DropFragMalformed,
	frag.Timeout:   DropFragTimeout,
}

// reassemble takes a fragment to a VIP or LIP. When it completes its
// datagram, the datagram replaces it in f (the reader's buffer holds 64 KiB
// past its headroom), p is parsed anew and whole is true; otherwise the
// fragment is held (Stolen) or dropped.
func (b *Balancer) reassemble(p *pkt, f *Frame) (v Verdict, whole bool) {
	if b.frags == nil {
		return b.Stats.drop(DropFragment), false
	}
	res, info, _ := b.frags.Add(p.b[p.l3:], f.Buf[f.Off+wire.EtherLen:], b.table.now.Load())
	switch res {
	case frag.Held:
		return Stolen, false
	case frag.Dropped:
		return Drop, false // counted by the reassembler (Stats.fragCount)
	}
	f.Len = wire.EtherLen + info.Len
	f.plain()
	f.reasm = info.MaxFrag
	*p = pkt{}
	if isIP, bad := parseIP(f.Bytes(), p); !isIP || bad || p.frag {
		return b.Stats.drop(DropFragMalformed), false
	}
	return 0, true
}

// sweepFrags gives up the datagrams whose time is up.
func (b *Balancer) sweepFrags(now int64) { b.frags.Sweep(now) }

// FragmentBytes is what the fragments held for reassembly are charged,
// within Config.Reassembly.MaxBytes.
func (b *Balancer) FragmentBytes() int64 {
	if b.frags == nil {
		return 0
	}
	return b.frags.Bytes()
}

// Reassembled counts the datagrams made whole from fragments.
func (b *Balancer) Reassembled() uint64 {
	if b.frags == nil {
		return 0
	}
	return b.frags.Reassembled()
}

// fragBufs are the buffers fragments are cut into: a virtio-net header,
// the Ethernet header and up to 64 KiB.
var fragBufs = sync.Pool{New: func() any {
	b := make([]byte, tun.VNetHdrLen+wire.EtherLen+frag.MaxDatagram)
	return &b
}}

// refragment cuts a reassembled datagram that v sends out for its way out
// and sends the fragments by the Link; one that fits is sent whole.
func (b *Balancer) refragment(side Side, v Verdict, f *Frame) Verdict {
	out := side
	if v == Forward {
		out = 1 - side
	}
	mtu := b.cfg.ClientMTU
	if out == ServerSide {
		mtu = b.cfg.ServerMTU
	}
	mtu = min(mtu, f.reasm)
	frame := f.Bytes()
	ip := frame[wire.EtherLen:]
	if len(ip) <= mtu {
		return v
	}
	s, ok := frag.NewSplitter(ip, mtu, b.fragID.Add(1))
	if !ok {
		return b.Stats.drop(DropFragNoRoom)
	}
	bp := fragBufs.Get().(*[]byte)
	buf := *bp
	clear(buf[:tun.VNetHdrLen]) // full checksums, no segmentation
	copy(buf[tun.VNetHdrLen:], frame[:wire.EtherLen])
	at := tun.VNetHdrLen + wire.EtherLen
	for range frag.MaxSplit {
		n := s.Next(buf[at:])
		if n == 0 {
			break
		}
		b.link.Send(out, buf[:at+n])
	}
	fragBufs.Put(bp)
	return Stolen
}

func randUint32() uint32 {
	var b [4]byte
	_, _ = rand.Read(b[:])
	return binary.BigEndian.Uint32(b[:])
}
