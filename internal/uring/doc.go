// Package uring is tapvs's io_uring: one ring per polling thread that reads
// TAP queues with multishot reads into provided-buffer rings and writes
// frames in batches, so a frame costs a fraction of a system call instead of
// two. It declares the kernel ABI by hand (golang.org/x/sys has only the
// system call numbers), sets a ring up on the caller's locked OS thread,
// checks the kernel has what tapvs needs, and names the cause when io_uring
// is refused, so the caller can fall back to read/write system calls and say
// why. It knows nothing of frames or queues beyond file descriptors and
// buffer groups: netstack decides what to read and write.
//
// Linux 6.7 or later (IORING_OP_READ_MULTISHOT); on other systems New
// returns ErrUnsupported.
package uring
