package health

import (
	"context"
	"fmt"
	"net"
	"net/textproto"
)

// keepalived's SMTP_CHECK: the server's greeting (220), HELO (250) and
// QUIT (221), in that order, with textproto reading each reply (multi-line
// ones included) and the whole exchange bounded by the check's timeout.

// defaultHelo is keepalived's helo_name when none is set.
const defaultHelo = "smtpchecker.keepalived.org"

func smtpCheck(ctx context.Context, dial func(context.Context) (net.Conn, error), spec Spec) error {
	conn, err := dial(ctx)
	if err != nil {
		return fmt.Errorf("smtp connect: %w", err)
	}
	defer conn.Close()
	d, _ := ctx.Deadline() // checkFrom's: the check's timeout
	conn.SetDeadline(d)
	tc := textproto.NewConn(conn)
	if _, _, err := tc.ReadResponse(220); err != nil {
		return fmt.Errorf("smtp greeting: %w", err)
	}
	helo := spec.HeloName
	if helo == "" {
		helo = defaultHelo
	}
	if err := smtpCmd(tc, 250, "HELO %s", helo); err != nil {
		return err
	}
	return smtpCmd(tc, 221, "QUIT")
}

// smtpCmd sends one command and reads its reply, which must carry code.
func smtpCmd(tc *textproto.Conn, code int, format string, args ...any) error {
	id, err := tc.Cmd(format, args...)
	if err != nil {
		return fmt.Errorf("smtp %s: %w", verb(format), err)
	}
	tc.StartResponse(id)
	defer tc.EndResponse(id)
	if _, _, err := tc.ReadResponse(code); err != nil {
		return fmt.Errorf("smtp %s: %w", verb(format), err)
	}
	return nil
}

// verb is a command's name, for errors: "HELO %s" -> "HELO".
func verb(format string) string {
	for i, r := range format {
		if r == ' ' {
			return format[:i]
		}
	}
	return format
}
