package uring

import (
	"errors"
	"fmt"
	"sync/atomic"
	"unsafe"

	"golang.org/x/sys/unix"
)

// BufRing is a provided-buffer ring: slots of memory the kernel fills with
// multishot reads, handed back one by one as the caller is done with them.
// Slots live in an anonymous mapping, never in Go's heap, so an address in
// an SQE or in the ring stays valid whatever the garbage collector does.
// It belongs to its Ring's thread, like the Ring.
type BufRing struct {
	group uint16
	ents  []buf
	mask  uint16
	tail  uint16 // our tail; the kernel's is published by Publish
	bid0  uint16 // entry 0's bid as we last wrote it (never read back from shared memory)
	tailW *uint32

	ringMem, base   unsafe.Pointer
	ringLen, memLen uintptr
	slot, lead      uintptr
	n               int
}

// NewBufRing registers a buffer ring of entries slots (a power of two, at
// most 32768) of slot bytes each as buffer group group, and provides every
// slot. The kernel writes a read at lead bytes into its slot, so the
// caller keeps lead bytes of headroom before the data. The memory is not
// populated: a slot costs only the pages reads touch.
func (r *Ring) NewBufRing(group uint16, entries int, slot, lead uintptr) (*BufRing, error) {
	if entries <= 0 || entries > 1<<15 || entries&(entries-1) != 0 {
		return nil, fmt.Errorf("io_uring: buffer ring of %d entries: not a power of two in 1..32768", entries)
	}
	if lead >= slot || slot-lead > 1<<31 {
		return nil, fmt.Errorf("io_uring: buffer ring slot %d with lead %d: no room", slot, lead)
	}
	if !littleEndian() {
		// Publish stores the u16 tail with entry 0's bid as one u32.
		return nil, errors.New("io_uring: buffer rings need a little-endian machine")
	}
	page := uintptr(unix.Getpagesize())
	b := &BufRing{group: group, mask: uint16(entries - 1), slot: slot, lead: lead, n: entries}
	b.ringLen = (unsafe.Sizeof(buf{})*uintptr(entries) + page - 1) &^ (page - 1)
	m, err := unix.MmapPtr(-1, 0, nil, b.ringLen, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_PRIVATE|unix.MAP_ANONYMOUS)
	if err != nil {
		return nil, fmt.Errorf("io_uring: buffer ring %d: mmap %d bytes: %w", group, b.ringLen, err)
	}
	b.ringMem = m
	b.memLen = slot * uintptr(entries)
	if b.base, err = unix.MmapPtr(-1, 0, nil, b.memLen, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_PRIVATE|unix.MAP_ANONYMOUS); err != nil {
		b.base = nil
		b.unmap()
		return nil, fmt.Errorf("io_uring: buffer ring %d: mmap %d bytes of slots: %w", group, b.memLen, err)
	}
	b.ents = unsafe.Slice((*buf)(m), entries)
	b.tailW = (*uint32)(unsafe.Add(m, unsafe.Offsetof(buf{}.Bid)))
	reg := bufReg{RingAddr: uint64(uintptr(m)), RingEntries: uint32(entries), Bgid: group}
	if e := r.register(registerPbufRing, unsafe.Pointer(&reg), 1); e != 0 {
		b.unmap()
		return nil, refusal("register buffer ring", e)
	}
	for bid := range entries {
		b.Put(uint16(bid))
	}
	b.Publish()
	r.bufs = append(r.bufs, b)
	return b, nil
}

// littleEndian reports the byte order Publish relies on.
func littleEndian() bool {
	x := uint16(1)
	return *(*byte)(unsafe.Pointer(&x)) == 1
}

// Put gives slot bid back to the kernel, visible after the next Publish.
// Only a slot the kernel handed out (and no write still reads) may be put.
func (b *BufRing) Put(bid uint16) {
	i := b.tail & b.mask
	b.ents[i] = buf{Addr: uint64(uintptr(b.base) + uintptr(bid)*b.slot + b.lead), Len: uint32(b.slot - b.lead), Bid: bid}
	if i == 0 {
		b.bid0 = bid
	}
	b.tail++
}

// Publish makes every Put since the last Publish visible to the kernel:
// one atomic store, after the entries' plain stores. The tail is a u16
// overlaying entry 0's resv and Go has no 16-bit atomic, so the store
// covers entry 0's bid too, rewritten from our own copy (only we write
// bids, and the kernel reads them only below the tail).
func (b *BufRing) Publish() {
	atomic.StoreUint32(b.tailW, uint32(b.tail)<<16|uint32(b.bid0))
}

// Group returns the buffer group id, for ReadMultishot.
func (b *BufRing) Group() uint16 { return b.group }

// Slot returns slot bid whole: the kernel's data starts at Lead().
func (b *BufRing) Slot(bid uint16) []byte {
	return unsafe.Slice((*byte)(unsafe.Add(b.base, uintptr(bid)*b.slot)), b.slot)
}

// Lead returns where in its slot the kernel writes a read.
func (b *BufRing) Lead() int { return int(b.lead) }

// Bid returns the slot that holds p (a slice of a slot, wherever in it), and
// whether p points into this ring's slots at all.
func (b *BufRing) Bid(p []byte) (uint16, bool) {
	if len(p) == 0 {
		return 0, false
	}
	off := uintptr(unsafe.Pointer(unsafe.SliceData(p))) - uintptr(b.base)
	if off >= b.memLen {
		return 0, false
	}
	return uint16(off / b.slot), true
}

// unmap frees the ring's and the slots' memory; the Ring calls it once the
// kernel can no longer read or write them.
func (b *BufRing) unmap() {
	if b.base != nil {
		unix.MunmapPtr(b.base, b.memLen)
		b.base = nil
	}
	if b.ringMem != nil {
		unix.MunmapPtr(b.ringMem, b.ringLen)
		b.ringMem = nil
	}
	b.ents = nil
}
