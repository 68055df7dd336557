package e2e

import (
	"bufio"
	"fmt"
	"net"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/tapvs/tapvs/lab"
)

// TestEventsAdm: `ipvsadm --events` against a running tapvs prints a
// client's connection closed, rs2 taken out by its health check once its
// web server stops and put back when it starts again, one line each, as
// they happen: the test waits on those lines (each wait bounded), never
// on a listing. The listing agrees the moment each line arrives: the
// event is sent once the move is made.
func TestEventsAdm(t *testing.T) {
	e := setup(t, fmt.Sprintf(checkedServices, 1, 1, ""), "")
	cmd := exec.Command(ipvsadmBin, "--events", "--kind", "server,conn_closed", "-t", "172.25.254.100:80")
	cmd.Env = append(os.Environ(), "TAPVS_SOCKET="+e.top.Socket)
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var stderr strings.Builder
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	lines := make(chan string, 64)
	go func() {
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			lines <- sc.Text()
		}
		close(lines)
		exited <- cmd.Wait()
	}()
	t.Cleanup(func() { cmd.Process.Kill() })
	var seen []string
	// wait returns the first line with every one of want in it, within d.
	wait := func(d time.Duration, want ...string) string {
		t.Helper()
		l := waitOrNot(lines, &seen, d, want...)
		if l == "" {
			t.Fatalf("no line with %q within %v (stderr %q); it printed:\n%s", want, d, stderr.String(), strings.Join(seen, "\n"))
		}
		return l
	}

	// A client's connection, closed by the client. Dialled again until
	// its close is seen: the first may come before the subscription is
	// made; once one is seen, every later event is in the stream.
	var line string
	for i := 0; line == ""; i++ {
		if i == 20 {
			t.Fatalf("no conn_closed line for 20 connections; it printed:\n%s", strings.Join(seen, "\n"))
		}
		c, err := lab.Dial(e.ctx(5*time.Second), e.top.Client, "tcp4", "172.25.254.100:80")
		if err != nil {
			t.Fatal(err)
		}
		client := c.LocalAddr().(*net.TCPAddr).AddrPort()
		c.Close()
		line = waitOrNot(lines, &seen, 2*time.Second, "conn_closed", "client="+client.String())
	}
	for _, want := range []string{`service="tcp 172.25.254.100:80"`, "proto=tcp", "vip=172.25.254.100:80", "state=TIME_WAIT", `reason="fin: the client closed first"`} {
		if !strings.Contains(line, want) {
			t.Errorf("conn_closed line %q lacks %s", line, want)
		}
	}

	// rs2's web server stops: fall (2) failing checks, 200 ms apart, each
	// up to 150 ms, and a margin.
	e.rs[1].StopHTTP()
	line = wait(5*time.Second, "server_down", "server=10.20.2.2:80")
	if !strings.Contains(line, "reason=") {
		t.Errorf("server_down without its reason: %q", line)
	}
	if w, up, _ := e.weightOf("172.25.254.100:80", "10.20.2.2:80"); w != 0 || up {
		t.Errorf("at server_down rs2 has weight %d, up %v: want 0, down", w, up)
	}
	if err := e.rs[1].StartHTTP(); err != nil {
		t.Fatal(err)
	}
	wait(5*time.Second, "server_up", "server=10.20.2.2:80")
	if w, up, _ := e.weightOf("172.25.254.100:80", "10.20.2.2:80"); w != 1 || !up {
		t.Errorf("at server_up rs2 has weight %d, up %v: want 1, up", w, up)
	}
	for _, l := range seen {
		if !strings.Contains(l, "server_") && !strings.Contains(l, "conn_closed") {
			t.Errorf("a line of a kind not asked for: %q", l)
		}
	}

	// Interrupted, it ends with status 0.
	cmd.Process.Signal(os.Interrupt)
	for range lines {
	}
	select {
	case err := <-exited:
		if err != nil {
			t.Errorf("ipvsadm --events interrupted: %v (%s)", err, stderr.String())
		}
	case <-time.After(5 * time.Second):
		t.Error("ipvsadm --events did not end on SIGINT")
	}
}

// waitOrNot is the first line with every one of want in it within d, or
// "" (lines read meanwhile are added to seen).
func waitOrNot(lines <-chan string, seen *[]string, d time.Duration, want ...string) string {
	deadline := time.NewTimer(d)
	defer deadline.Stop()
	for {
		select {
		case l, ok := <-lines:
			if !ok {
				return ""
			}
			*seen = append(*seen, l)
			match := true
			for _, w := range want {
				match = match && strings.Contains(l, w)
			}
			if match {
				return l
			}
		case <-deadline.C:
			return ""
		}
	}
}
