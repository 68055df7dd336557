package soak

import (
	"strings"
	"testing"
	"time"

	"github.com/tapvs/tapvs/config"
	"github.com/tapvs/tapvs/lab"
)

// Every configuration a reload writes validates, and each step changes
// what it says it changes: the weights, and rs2 out of web and echo on the
// fourth step.
func TestReloadStepsValidate(t *testing.T) {
	top := lab.NewTopology("tvx", "tvxc", "tvxs")
	for i := range 8 {
		cfg, err := config.Parse(top.Config(reloadStep(i), soakExtra))
		if err != nil {
			t.Fatalf("step %d: %v", i, err)
		}
		for _, sc := range cfg.Services {
			want := 2
			if i%4 == 3 && (sc.Name == "web" || sc.Name == "echo") {
				want = 1
			}
			if len(sc.RealServers) != want {
				t.Fatalf("step %d: service %s has %d real servers, want %d", i, sc.Name, len(sc.RealServers), want)
			}
		}
	}
}

func TestOptionsCheck(t *testing.T) {
	for _, c := range []struct {
		o    Options
		want string
	}{
		{Options{Duration: time.Minute, Prefix: "tvk"}, ""},
		{Options{Duration: 10 * time.Second, Prefix: "tvk"}, "duration:"},
		{Options{Duration: 48 * time.Hour, Prefix: "tvk"}, "duration:"},
		{Options{Duration: time.Minute}, "prefix:"},
		{Options{Duration: time.Minute, Prefix: "much-too-long-prefix"}, "prefix:"},
		{Options{Duration: time.Minute, Prefix: "a/b"}, "prefix:"},
	} {
		err := c.o.Check()
		if (err == nil) != (c.want == "") || err != nil && !strings.HasPrefix(err.Error(), c.want) {
			t.Errorf("%+v: %v, want %q", c.o, err, c.want)
		}
	}
}

func TestCheckHTTP(t *testing.T) {
	for body, ok := range map[string]bool{
		"rs1 10.20.1.2 saw 172.25.84.10:5000\n":  true,
		"rs2 10.20.2.2 saw 172.25.84.11:65535\n": true,
		"rs1 10.20.1.2 saw 172.25.254.1:5000\n":  false, // the client: FULLNAT broken
		"rs1 10.20.1.2 saw\n":                    false,
		"":                                       false,
	} {
		if err := checkHTTP([]byte(body)); (err == nil) != ok {
			t.Errorf("%q: %v", body, err)
		}
	}
}

func TestUDPErrors(t *testing.T) {
	text := "Ip: Forwarding DefaultTTL\nIp: 1 64\nUdp: InDatagrams NoPorts InErrors OutDatagrams RcvbufErrors SndbufErrors\nUdp: 10 2 3 9 4 0\nUdpLite: InDatagrams NoPorts InErrors\nUdpLite: 0 0 7\n"
	got := udpErrors(text)
	if got["InErrors"] != 3 || got["RcvbufErrors"] != 4 || len(got) != 2 {
		t.Fatalf("%v", got)
	}
}
