package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"

	"github.com/tapvs/tapvs/control/api"
)

// printEvents prints tapvs's events, one a line, until interrupted (or
// c.count of them): GET /v1/events.
func printEvents(cl *api.Client, c *command, out io.Writer) error {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	q := api.EventQuery{}
	if c.kinds != "" {
		q.Kinds = strings.Split(c.kinds, ",")
	}
	if c.service != "" {
		k := c.key()
		q.Protocol, q.Addr = k.Protocol, k.Addr
		if k.FWMark != 0 {
			q.Protocol, q.Addr = fwm, strconv.FormatUint(uint64(k.FWMark), 10)
		}
	}
	n := 0
	err := cl.Events(ctx, q, nil, func(e api.Event) bool {
		fmt.Fprintln(out, eventLine(e))
		n++
		return c.count == 0 || n < c.count
	})
	if ctx.Err() != nil {
		return nil // interrupted: the ordinary end
	}
	return err
}

// eventLine is e on one line: its time (UTC, to the microsecond), kind
// and its fields as key=value, a value with a space quoted.
func eventLine(e api.Event) string {
	var b strings.Builder
	b.WriteString(e.Time.UTC().Format("15:04:05.000000"))
	b.WriteByte(' ')
	b.WriteString(e.Kind)
	add := func(k, v string) {
		if v == "" {
			return
		}
		if strings.ContainsAny(v, " \"\t\n") {
			v = strconv.Quote(v)
		}
		fmt.Fprintf(&b, " %s=%s", k, v)
	}
	add("service", e.Service)
	add("server", e.Server)
	add("proto", e.Protocol)
	add("client", e.Client)
	add("vip", e.VIP)
	add("local", e.Local)
	add("state", e.State)
	if e.Count != 0 || e.Kind == "drops" || e.Kind == "lost" {
		add("count", strconv.FormatUint(e.Count, 10))
	}
	add("reason", e.Reason)
	return b.String()
}
