package health

import (
	"bufio"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"gvisor.dev/gvisor/pkg/tcpip/stack"

	"github.com/tapvs/tapvs/nat"
)

// smtpServer answers on ap inside st: greeting first (none: silent),
// then each command's reply by its verb (a verb not in replies gets none).
// It records the command lines it read in got.
func smtpServer(t *testing.T, st *stack.Stack, ap netip.AddrPort, greeting string, replies map[string]string, got *[]string, mu *sync.Mutex) {
	t.Helper()
	l := listen(t, st, ap)
	t.Cleanup(func() { l.Close() })
	go func() {
		for {
			conn, err := l.Accept()
			if err != nil {
				return
			}
			go func() {
				defer conn.Close()
				conn.SetDeadline(time.Now().Add(5 * time.Second))
				if greeting != "" {
					conn.Write([]byte(greeting))
				}
				r := bufio.NewReader(conn)
				for {
					line, err := r.ReadString('\n')
					if err != nil {
						return
					}
					line = strings.TrimRight(line, "\r\n")
					mu.Lock()
					*got = append(*got, line)
					mu.Unlock()
					verb, _, _ := strings.Cut(line, " ")
					if rep := replies[verb]; rep != "" {
						conn.Write([]byte(rep))
					}
				}
			}()
		}
	}()
}

// keepalived's SMTP_CHECK: 220, HELO -> 250, QUIT -> 221 pass; any other
// code, a silent server or a closed port fails, naming the step.
func TestCheckSMTP(t *testing.T) {
	ok := map[string]string{"HELO": "250 mx.example hello\r\n", "QUIT": "221 bye\r\n"}
	cases := []struct {
		name     string
		greeting string
		replies  map[string]string
		helo     string
		port     uint16
		want     string // "" passes
		wantCmds []string
	}{
		{"pass", "220 mx.example ESMTP\r\n", ok, "", 25, "", []string{"HELO smtpchecker.keepalived.org", "QUIT"}},
		{"helo_name", "220 mx.example ESMTP\r\n", ok, "lb1.example", 25, "", []string{"HELO lb1.example", "QUIT"}},
		{"multi-line greeting", "220-mx.example\r\n220 ESMTP ready\r\n", ok, "", 25, "", nil},
		{"greeting refused", "554 no service\r\n", ok, "", 25, "smtp greeting: 554", nil},
		{"helo refused", "220 mx\r\n", map[string]string{"HELO": "501 who?\r\n", "QUIT": "221 bye\r\n"}, "", 25, "smtp HELO: 501", nil},
		{"quit not 221", "220 mx\r\n", map[string]string{"HELO": "250 ok\r\n", "QUIT": "250 ok\r\n"}, "", 25, "smtp QUIT: 250", nil},
		{"silent server", "", ok, "", 25, "smtp greeting", nil},
		{"nothing listening", "", ok, "", 26, "smtp connect", nil},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			st := loopStack(t, lip, rs1.Addr())
			var mu sync.Mutex
			var got []string
			smtpServer(t, st, netip.AddrPortFrom(rs1.Addr(), 25), tc.greeting, tc.replies, &got, &mu)
			c := New(nil, st, nic, quiet)
			spec := Spec{Type: "smtp", Port: tc.port, HeloName: tc.helo, Timeout: 500 * time.Millisecond}
			err := c.checkFrom([]netip.Addr{lip}, Target{Proto: nat.TCP, VIP: vip, RS: rs1, Spec: spec})
			switch {
			case tc.want == "" && err != nil:
				t.Fatalf("%v, want a pass", err)
			case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
				t.Fatalf("%v, want an error saying %q", err, tc.want)
			}
			if tc.wantCmds != nil {
				mu.Lock()
				defer mu.Unlock()
				if strings.Join(got, "|") != strings.Join(tc.wantCmds, "|") {
					t.Errorf("the server read %q, want %q", got, tc.wantCmds)
				}
			}
		})
	}
}
