// Package hostnft writes the nftables rules tapvs asks of a kernel around
// one of its TAPs: masquerade of what leaves the server side's subnet by
// another interface (Masquerade) and DNAT of published ports to VIPs
// (Publish), the sidecar's kernel side. Each is one table of its own per
// family (ip for IPv4, ip6 for IPv6, both named after the TAP), in the
// namespace the TAP is in, written in one batch; it replaces the tables an
// earlier tapvs left, of either family, and is removed by the func it
// returns. No frame passes through here: the TAP itself is package tun's.
package hostnft

import (
	"fmt"

	"github.com/google/nftables"
	"github.com/tapvs/tapvs/tun"
)

// table is the tables of one name being written in a namespace's kernel:
// IPv4's and IPv6's (nil where that family has no rules).
type table struct {
	what, name string // the caller and the TAP, for errors
	tableName  string
	c          *nftables.Conn
	t4, t6     *nftables.Table
	closeNS    func()
}

// newTable opens nftables in the named namespace (the caller's if "") and
// starts a batch that makes the tables tableName of the families wanted
// (v4: ip, v6: ip6) empty and removes the other family's: adding a table
// that exists is no error, deleting it then empties it (or removes it), so
// what a tapvs that died left, or one whose configuration had the other
// family, is replaced. Rules are added to t.t4 and t.t6 by the caller;
// commit sends the batch.
func newTable(what, name, nsName, tableName string, v4, v6 bool) (*table, error) {
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
	t := &table{what: what, name: name, tableName: tableName, c: c, closeNS: closeNS}
	fresh := func(family nftables.TableFamily, want bool) *nftables.Table {
		nt := &nftables.Table{Family: family, Name: tableName}
		c.AddTable(nt)
		c.DelTable(nt)
		if !want {
			return nil
		}
		c.AddTable(nt)
		return nt
	}
	t.t4 = fresh(nftables.TableFamilyIPv4, v4)
	t.t6 = fresh(nftables.TableFamilyIPv6, v6)
	return t, nil
}

// commit sends the batch and returns the func that removes the tables.
func (t *table) commit() (remove func() error, err error) {
	if err := t.c.Flush(); err != nil {
		t.closeNS()
		return nil, fmt.Errorf("%s %s: nftables table %s: %w", t.what, t.name, t.tableName, err)
	}
	return func() error {
		defer t.closeNS()
		for _, nt := range []*nftables.Table{t.t4, t.t6} {
			if nt != nil {
				t.c.DelTable(nt)
			}
		}
		if err := t.c.Flush(); err != nil {
			return fmt.Errorf("%s %s: remove nftables table %s: %w", t.what, t.name, t.tableName, err)
		}
		return nil
	}, nil
}
