package control

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/tapvs/tapvs/control/api"
)

// GET /v1/services lists services sorted; with ?order=added, in the order
// they were added (ipvsadm --nosort's kernel order), real servers in
// theirs; another order is refused and named.
func TestServicesOrder(t *testing.T) {
	m := newManager(t)
	do := serve(t, m)
	for _, body := range []string{
		`{"protocol":"udp","addr":"10.0.0.2:53","scheduler":"rr"}`,
		`{"protocol":"tcp","addr":"10.0.0.9:80","scheduler":"rr"}`,
		`{"protocol":"tcp","addr":"10.0.0.1:80","scheduler":"rr"}`,
	} {
		if c, b := do("POST", "/v1/services", body); c != 204 {
			t.Fatalf("add %s: %d %s", body, c, b)
		}
	}
	for _, d := range []string{"10.1.0.9:80", "10.1.0.1:80"} {
		if c, b := do("POST", "/v1/services/tcp/10.0.0.1:80/dests", `{"addr":"`+d+`"}`); c != 204 {
			t.Fatalf("add dest %s: %d %s", d, c, b)
		}
	}
	order := func(path string) string {
		c, b := do("GET", path, "")
		if c != 200 {
			t.Fatalf("GET %s: %d %s", path, c, b)
		}
		var svcs []api.Service
		if err := json.Unmarshal([]byte(b), &svcs); err != nil {
			t.Fatal(err)
		}
		var keys []string
		for _, s := range svcs {
			k := s.Protocol + " " + s.Addr
			for _, d := range s.Dests {
				k += " " + d.Addr
			}
			keys = append(keys, k)
		}
		return strings.Join(keys, ", ")
	}
	if got, want := order("/v1/services"), "tcp 10.0.0.1:80 10.1.0.9:80 10.1.0.1:80, tcp 10.0.0.9:80, udp 10.0.0.2:53"; got != want {
		t.Errorf("sorted: %s, want %s", got, want)
	}
	if got, want := order("/v1/services?order=added"), "udp 10.0.0.2:53, tcp 10.0.0.9:80, tcp 10.0.0.1:80 10.1.0.9:80 10.1.0.1:80"; got != want {
		t.Errorf("as added: %s, want %s", got, want)
	}
	if c, b := do("GET", "/v1/services?order=name", ""); c != 400 || !strings.Contains(b, `"code":"invalid"`) || !strings.Contains(b, "order") {
		t.Errorf("order=name: %d %s, want 400 naming order", c, b)
	}
}
