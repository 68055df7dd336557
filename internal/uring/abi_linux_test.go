package uring

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"unsafe"

	"github.com/tapvs/tapvs/internal/uring/uringtest"
)

// abiFact is one number of the ABI: a C expression over <linux/io_uring.h>
// and the value our hand declaration gives it.
type abiFact struct {
	c   string
	val uint64
}

// abiFacts lists every size, offset and constant we declare that the
// header has. Not here because the build machine's header predates them:
// IORING_OP_READ_MULTISHOT (6.7; the kernel tapvs needs is checked at run
// time by the probe) and getevents_arg's min_wait_usec (6.12, "pad" before).
func abiFacts() []abiFact {
	var (
		s sqe
		c CQE
		p params
		b buf
		g bufReg
		w geteventsArg
		o probeOp
		r probe
	)
	u := func(v uintptr) uint64 { return uint64(v) }
	return []abiFact{
		{"sizeof(struct io_uring_sqe)", u(unsafe.Sizeof(s))},
		{"offsetof(struct io_uring_sqe, opcode)", u(unsafe.Offsetof(s.Opcode))},
		{"offsetof(struct io_uring_sqe, flags)", u(unsafe.Offsetof(s.Flags))},
		{"offsetof(struct io_uring_sqe, ioprio)", u(unsafe.Offsetof(s.Ioprio))},
		{"offsetof(struct io_uring_sqe, fd)", u(unsafe.Offsetof(s.Fd))},
		{"offsetof(struct io_uring_sqe, off)", u(unsafe.Offsetof(s.Off))},
		{"offsetof(struct io_uring_sqe, addr)", u(unsafe.Offsetof(s.Addr))},
		{"offsetof(struct io_uring_sqe, len)", u(unsafe.Offsetof(s.Len))},
		{"offsetof(struct io_uring_sqe, rw_flags)", u(unsafe.Offsetof(s.OpFlags))},
		{"offsetof(struct io_uring_sqe, cancel_flags)", u(unsafe.Offsetof(s.OpFlags))},
		{"offsetof(struct io_uring_sqe, user_data)", u(unsafe.Offsetof(s.UserData))},
		{"offsetof(struct io_uring_sqe, buf_group)", u(unsafe.Offsetof(s.BufGroup))},
		{"offsetof(struct io_uring_sqe, personality)", u(unsafe.Offsetof(s.Personality))},
		{"offsetof(struct io_uring_sqe, file_index)", u(unsafe.Offsetof(s.FileIndex))},
		{"offsetof(struct io_uring_sqe, addr3)", u(unsafe.Offsetof(s.Addr3))},

		{"sizeof(struct io_uring_cqe)", u(unsafe.Sizeof(c))},
		{"offsetof(struct io_uring_cqe, user_data)", u(unsafe.Offsetof(c.UserData))},
		{"offsetof(struct io_uring_cqe, res)", u(unsafe.Offsetof(c.Res))},
		{"offsetof(struct io_uring_cqe, flags)", u(unsafe.Offsetof(c.Flags))},

		{"sizeof(struct io_uring_params)", u(unsafe.Sizeof(p))},
		{"offsetof(struct io_uring_params, sq_entries)", u(unsafe.Offsetof(p.SQEntries))},
		{"offsetof(struct io_uring_params, cq_entries)", u(unsafe.Offsetof(p.CQEntries))},
		{"offsetof(struct io_uring_params, flags)", u(unsafe.Offsetof(p.Flags))},
		{"offsetof(struct io_uring_params, features)", u(unsafe.Offsetof(p.Features))},
		{"offsetof(struct io_uring_params, wq_fd)", u(unsafe.Offsetof(p.WQFd))},
		{"offsetof(struct io_uring_params, sq_off)", u(unsafe.Offsetof(p.SQOff))},
		{"offsetof(struct io_uring_params, cq_off)", u(unsafe.Offsetof(p.CQOff))},
		{"sizeof(struct io_sqring_offsets)", u(unsafe.Sizeof(p.SQOff))},
		{"offsetof(struct io_sqring_offsets, head)", u(unsafe.Offsetof(p.SQOff.Head))},
		{"offsetof(struct io_sqring_offsets, tail)", u(unsafe.Offsetof(p.SQOff.Tail))},
		{"offsetof(struct io_sqring_offsets, ring_mask)", u(unsafe.Offsetof(p.SQOff.RingMask))},
		{"offsetof(struct io_sqring_offsets, ring_entries)", u(unsafe.Offsetof(p.SQOff.RingEntries))},
		{"offsetof(struct io_sqring_offsets, flags)", u(unsafe.Offsetof(p.SQOff.Flags))},
		{"offsetof(struct io_sqring_offsets, dropped)", u(unsafe.Offsetof(p.SQOff.Dropped))},
		{"offsetof(struct io_sqring_offsets, array)", u(unsafe.Offsetof(p.SQOff.Array))},
		{"sizeof(struct io_cqring_offsets)", u(unsafe.Sizeof(p.CQOff))},
		{"offsetof(struct io_cqring_offsets, head)", u(unsafe.Offsetof(p.CQOff.Head))},
		{"offsetof(struct io_cqring_offsets, tail)", u(unsafe.Offsetof(p.CQOff.Tail))},
		{"offsetof(struct io_cqring_offsets, ring_mask)", u(unsafe.Offsetof(p.CQOff.RingMask))},
		{"offsetof(struct io_cqring_offsets, ring_entries)", u(unsafe.Offsetof(p.CQOff.RingEntries))},
		{"offsetof(struct io_cqring_offsets, overflow)", u(unsafe.Offsetof(p.CQOff.Overflow))},
		{"offsetof(struct io_cqring_offsets, cqes)", u(unsafe.Offsetof(p.CQOff.CQEs))},
		{"offsetof(struct io_cqring_offsets, flags)", u(unsafe.Offsetof(p.CQOff.Flags))},

		{"sizeof(struct io_uring_probe)", u(unsafe.Offsetof(r.Ops))},
		{"offsetof(struct io_uring_probe, last_op)", u(unsafe.Offsetof(r.LastOp))},
		{"offsetof(struct io_uring_probe, ops_len)", u(unsafe.Offsetof(r.OpsLen))},
		{"sizeof(struct io_uring_probe_op)", u(unsafe.Sizeof(o))},
		{"offsetof(struct io_uring_probe_op, flags)", u(unsafe.Offsetof(o.Flags))},

		{"sizeof(struct io_uring_buf)", u(unsafe.Sizeof(b))},
		{"offsetof(struct io_uring_buf, addr)", u(unsafe.Offsetof(b.Addr))},
		{"offsetof(struct io_uring_buf, len)", u(unsafe.Offsetof(b.Len))},
		{"offsetof(struct io_uring_buf, bid)", u(unsafe.Offsetof(b.Bid))},
		{"offsetof(struct io_uring_buf, resv)", u(unsafe.Offsetof(b.Resv))},
		{"offsetof(struct io_uring_buf_ring, tail)", u(unsafe.Offsetof(b.Resv))},
		{"sizeof(struct io_uring_buf_reg)", u(unsafe.Sizeof(g))},
		{"offsetof(struct io_uring_buf_reg, ring_addr)", u(unsafe.Offsetof(g.RingAddr))},
		{"offsetof(struct io_uring_buf_reg, ring_entries)", u(unsafe.Offsetof(g.RingEntries))},
		{"offsetof(struct io_uring_buf_reg, bgid)", u(unsafe.Offsetof(g.Bgid))},
		{"offsetof(struct io_uring_buf_reg, pad)", u(unsafe.Offsetof(g.Flags))},
		{"offsetof(struct io_uring_buf_reg, resv)", u(unsafe.Offsetof(g.Flags)) + 2},

		{"sizeof(struct io_uring_getevents_arg)", u(unsafe.Sizeof(w))},
		{"offsetof(struct io_uring_getevents_arg, sigmask)", u(unsafe.Offsetof(w.Sigmask))},
		{"offsetof(struct io_uring_getevents_arg, sigmask_sz)", u(unsafe.Offsetof(w.SigmaskSz))},
		{"offsetof(struct io_uring_getevents_arg, pad)", u(unsafe.Offsetof(w.MinWaitUsec))},
		{"offsetof(struct io_uring_getevents_arg, ts)", u(unsafe.Offsetof(w.Ts))},

		{"IORING_SETUP_CQSIZE", setupCQSize},
		{"IORING_SETUP_SUBMIT_ALL", setupSubmitAll},
		{"IORING_SETUP_COOP_TASKRUN", setupCoopTaskrun},
		{"IORING_SETUP_TASKRUN_FLAG", setupTaskrunFlag},
		{"IORING_SETUP_SINGLE_ISSUER", setupSingleIssuer},
		{"IORING_SETUP_DEFER_TASKRUN", setupDeferTaskrun},
		{"IORING_FEAT_SINGLE_MMAP", featSingleMmap},
		{"IORING_FEAT_NODROP", featNoDrop},
		{"IORING_FEAT_EXT_ARG", featExtArg},
		{"IORING_OFF_SQ_RING", offSQRing},
		{"IORING_OFF_CQ_RING", offCQRing},
		{"IORING_OFF_SQES", offSQEs},
		{"IORING_ENTER_GETEVENTS", enterGetEvents},
		{"IORING_ENTER_EXT_ARG", enterExtArg},
		{"IORING_SQ_CQ_OVERFLOW", sqCQOverflow},
		{"IORING_SQ_TASKRUN", sqTaskrun},
		{"IORING_CQE_F_BUFFER", cqeFBuffer},
		{"IORING_CQE_F_MORE", cqeFMore},
		{"IORING_CQE_BUFFER_SHIFT", cqeBufferShift},
		{"IOSQE_BUFFER_SELECT", sqeBufferSelect},
		{"IORING_OP_NOP", opNop},
		{"IORING_OP_ASYNC_CANCEL", opAsyncCancel},
		{"IORING_OP_READ", opRead},
		{"IORING_OP_WRITE", opWrite},
		{"IORING_ASYNC_CANCEL_ALL", asyncCancelAll},
		{"IORING_ASYNC_CANCEL_FD", asyncCancelFD},
		{"IORING_ASYNC_CANCEL_ANY", asyncCancelAny},
		{"IORING_REGISTER_PROBE", registerProbe},
		{"IORING_REGISTER_PBUF_RING", registerPbufRing},
		{"IORING_UNREGISTER_PBUF_RING", unregisterPbufRing},
		{"IO_URING_OP_SUPPORTED", probeOpSupported},
	}
}

// TestABILayout pins the sizes the kernel expects, with or without a header.
func TestABILayout(t *testing.T) {
	for _, c := range []struct {
		name      string
		got, want uintptr
	}{
		{"sqe", unsafe.Sizeof(sqe{}), 64},
		{"CQE", unsafe.Sizeof(CQE{}), 16},
		{"params", unsafe.Sizeof(params{}), 120},
		{"buf", unsafe.Sizeof(buf{}), 16},
		{"bufReg", unsafe.Sizeof(bufReg{}), 40},
		{"geteventsArg", unsafe.Sizeof(geteventsArg{}), 24},
		{"probeOp", unsafe.Sizeof(probeOp{}), 8},
		{"probe", unsafe.Sizeof(probe{}), 16 + 8*probeOps},
		{"opReadMultishot", opReadMultishot, 49}, // not in older headers
	} {
		if c.got != c.want {
			t.Errorf("%s: %d, want %d", c.name, c.got, c.want)
		}
	}
}

// TestABIHeader compiles a C program against the machine's
// <linux/io_uring.h> and compares each number with our declaration: the
// header is the kernel's word where it has the field (it may be older than
// the running kernel, so we check against it rather than generate from it).
func TestABIHeader(t *testing.T) {
	const header = "/usr/include/linux/io_uring.h"
	if _, err := os.Stat(header); err != nil {
		uringtest.Missing(t, "no kernel header to compare with: %v", err)
	}
	cc, err := exec.LookPath("cc")
	if err != nil {
		uringtest.Missing(t, "no C compiler to read the header: %v", err)
	}
	facts := abiFacts()
	var src strings.Builder
	src.WriteString("#include <stddef.h>\n#include <stdio.h>\n#include <linux/io_uring.h>\nint main(void) {\n")
	for i, f := range facts {
		fmt.Fprintf(&src, "\tprintf(\"%d %%llu\\n\", (unsigned long long)(%s));\n", i, f.c)
	}
	src.WriteString("\treturn 0;\n}\n")
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "abi.c"), []byte(src.String()), 0o600); err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(dir, "abi")
	if out, err := exec.Command(cc, "-o", bin, filepath.Join(dir, "abi.c")).CombinedOutput(); err != nil {
		t.Fatalf("cc: %v\n%s", err, out)
	}
	out, err := exec.Command(bin).Output()
	if err != nil {
		t.Fatal(err)
	}
	seen := 0
	sc := bufio.NewScanner(bytes.NewReader(out))
	for sc.Scan() {
		var i int
		var v uint64
		if _, err := fmt.Sscanf(sc.Text(), "%d %d", &i, &v); err != nil || i < 0 || i >= len(facts) {
			t.Fatalf("bad line %q: %v", sc.Text(), err)
		}
		seen++
		if f := facts[i]; v != f.val {
			t.Errorf("%s: header says %d, we declare %d", f.c, v, f.val)
		}
	}
	if seen != len(facts) {
		t.Fatalf("got %d numbers from the header program, want %d", seen, len(facts))
	}
	t.Logf("%d sizes, offsets and constants match %s", seen, header)
}
