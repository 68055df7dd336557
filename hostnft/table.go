// Package hostnft writes the nftables rules tapvs asks of a kernel around
// one of its TAPs: masquerade of what leaves the server side's subnet by
// another interface (Masquerade) and DNAT of published ports to VIPs
// (Publish), the sidecar's kernel side. Each is one table of its own,
// named after the TAP, in the namespace the TAP is in; it replaces a table
// an earlier tapvs left and is removed by the func it returns. No frame
// passes through here: the TAP itself is package tun's.
package hostnft

import (
	"fmt"

	"github.com/google/nftables"
	"github.com/tapvs/tapvs/tun"
)

// table is one IPv4 table being written in a namespace's kernel.
type table struct {
	what, name string // the caller and the TAP, for errors
	c          *nftables.Conn
	t          *nftables.Table
	closeNS    func()
}

// newTable opens nftables in the named namespace (the caller's if "") and
// starts a batch that makes the table tableName empty: adding a table that
// exists is no error, deleting it then empties it, so one left by a tapvs
// that died is replaced. Rules are added to t.t by the caller; commit
// sends the batch.
func newTable(what, name, nsName, tableName string) (*table, error) {
	var opts []nftables.ConnOption
	// Each Flush dials netlink in the namespace anew: its handle is kept
	// open until the table is removed.
	closeNS := func() {}
	if nsName != "" {
		ns, err := tun.NetnsByName(nsName)
		if err != nil {
			return nil, fmt.Errorf("%s %s: netns %q: %w", what, name, nsName, err)
		}
		closeNS = func() { ns.Close() }
		opts = append(opts, nftables.WithNetNSFd(int(ns)))
	}
	c, err := nftables.New(opts...)
	if err != nil {
		closeNS()
		return nil, fmt.Errorf("%s %s: nftables: %w", what, name, err)
	}
	t := &nftables.Table{Family: nftables.TableFamilyIPv4, Name: tableName}
	c.AddTable(t)
	c.DelTable(t)
	c.AddTable(t)
	return &table{what: what, name: name, c: c, t: t, closeNS: closeNS}, nil
}

// commit sends the batch and returns the func that removes the table.
func (t *table) commit() (remove func() error, err error) {
	if err := t.c.Flush(); err != nil {
		t.closeNS()
		return nil, fmt.Errorf("%s %s: nftables table %s: %w", t.what, t.name, t.t.Name, err)
	}
	return func() error {
		defer t.closeNS()
		t.c.DelTable(t.t)
		if err := t.c.Flush(); err != nil {
			return fmt.Errorf("%s %s: remove nftables table %s: %w", t.what, t.name, t.t.Name, err)
		}
		return nil
	}, nil
}
