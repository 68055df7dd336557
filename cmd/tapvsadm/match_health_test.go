package main

import (
	"strings"
	"testing"

	"github.com/tapvs/tapvs/control/api"
)

// A match service's health check, as a VIP:port service's: --health -f N
// shows it ("FWM  N health ..."), sets it and stops it through fwm/N, and
// -S writes it as --health -f N, which -R sends back.
func TestMatchHealth(t *testing.T) {
	hc := api.HealthCheck{Type: "tcp", Port: 80, Rise: 3}
	fakeHealth = map[string]api.Health{"fwm 1": {Source: "runtime", Check: &hc, Servers: []api.HealthView{
		{Dest: "10.20.1.2:0", Reason: "tcp connect: connection refused"}, {Dest: "10.20.2.2:8443", Healthy: true}}}}
	fakeHealthSet = nil
	t.Cleanup(func() { fakeHealth, fakeHealthSet = map[string]api.Health{}, nil })
	sock, _ := fakeDaemon(t, svcsFWM, nil)
	want := "FWM  1 health runtime --check type=tcp,port=80,rise=3\n" +
		"  -> 10.20.1.2:0                  down: tcp connect: connection refused\n" +
		"  -> 10.20.2.2:8443               up\n"
	if got := tapvsadm(t, sock, "", "--health", "-f", "1"); got != want {
		t.Fatalf("--health -f 1:\n%s\nwant:\n%s", got, want)
	}
	if got := tapvsadm(t, sock, "", "--health", "-f", "2"); got != "FWM  2 health none\n" {
		t.Fatalf("--health -f 2: %q", got)
	}
	saved := tapvsadm(t, sock, "", "-S", "-n")
	if !strings.HasSuffix(saved, "\n--health -f 1 --check type=tcp,port=80,rise=3\n") || strings.Count(saved, "--health") != 1 {
		t.Fatalf("-S -n:\n%s", saved)
	}
	tapvsadm(t, sock, saved, "-R")
	tapvsadm(t, sock, "", "--health", "-f", "2", "--off")
	tapvsadm(t, sock, "", "--health", "-f", "2", "--check", "type=ping")
	if got := strings.Join(fakeHealthSet, "\n"); got != "fwm 1 type=tcp,port=80,rise=3\nfwm 2 off\nfwm 2 type=ping" {
		t.Fatalf("the checks sent:\n%s", got)
	}
}
