package control

import (
	"slices"
	"strings"
	"testing"
)

// sched_flags through the API: set on add, listed as ipvsadm names them,
// changed alone on edit, gone when the scheduler changes (they are its
// own), refused naming the flag when the scheduler has no such flag, the
// running state untouched by a refusal.
func TestAPISchedFlags(t *testing.T) {
	m := newManager(t)
	do := serve(t, m)
	flags := func() (string, []string) {
		t.Helper()
		svcs := m.Services()
		if len(svcs) != 1 {
			t.Fatalf("%d services", len(svcs))
		}
		return svcs[0].Scheduler, svcs[0].SchedFlags
	}
	want := func(sched string, names ...string) {
		t.Helper()
		if s, f := flags(); s != sched || !slices.Equal(f, names) {
			t.Fatalf("scheduler %s %v, want %s %v", s, f, sched, names)
		}
	}
	if c, b := do("POST", "/v1/services", `{"protocol":"tcp","addr":"10.0.0.1:80","scheduler":"sh","sched_flags":["sh-port","sh-fallback"]}`); c != 204 {
		t.Fatalf("add: %d %s", c, b)
	}
	want("sh", "sh-fallback", "sh-port")
	if c, b := do("GET", "/v1/services", ""); c != 200 || !strings.Contains(b, `"scheduler":"sh","sched_flags":["sh-fallback","sh-port"]`) {
		t.Fatalf("list: %d %s", c, b)
	}
	for _, tc := range []struct{ body, err string }{
		{`{"sched_flags":["mh-port"]}`, `"mh-port" is not a flag of scheduler sh (it takes sh-fallback, sh-port)`},
		{`{"scheduler":"rr","sched_flags":["sh-port"]}`, `"sh-port" is not a flag of scheduler rr (it takes none; sh and mh take them)`},
		{`{"scheduler":"nope"}`, `"nope" is not a scheduler`},
	} {
		// The error is a JSON string: its quotes escaped.
		if c, b := do("PUT", "/v1/services/tcp/10.0.0.1:80", tc.body); c != 400 || !strings.Contains(b, strings.ReplaceAll(tc.err, `"`, `\"`)) {
			t.Fatalf("%s: %d %s, want 400 %s", tc.body, c, b, tc.err)
		}
		want("sh", "sh-fallback", "sh-port")
	}
	if c, b := do("PUT", "/v1/services/tcp/10.0.0.1:80", `{"sched_flags":["sh-port"]}`); c != 200 && c != 204 {
		t.Fatalf("edit flags: %d %s", c, b)
	}
	want("sh", "sh-port")
	if c, b := do("PUT", "/v1/services/tcp/10.0.0.1:80", `{"scheduler":"sh"}`); c != 200 && c != 204 {
		t.Fatalf("edit, same scheduler: %d %s", c, b)
	}
	want("sh", "sh-port")
	if c, b := do("PUT", "/v1/services/tcp/10.0.0.1:80", `{"scheduler":"mh"}`); c != 200 && c != 204 {
		t.Fatalf("edit scheduler: %d %s", c, b)
	}
	want("mh")
	if c, b := do("PUT", "/v1/services/tcp/10.0.0.1:80", `{"scheduler":"mh","sched_flags":["flag-2"]}`); c != 200 && c != 204 {
		t.Fatalf("edit flags by number: %d %s", c, b)
	}
	want("mh", "mh-port")
	if c, b := do("PUT", "/v1/services/tcp/10.0.0.1:80", `{"sched_flags":[]}`); c != 200 && c != 204 {
		t.Fatalf("clear flags: %d %s", c, b)
	}
	want("mh")
	if c, b := do("POST", "/v1/services", `{"protocol":"tcp","addr":"10.0.0.1:81","scheduler":"wlc","sched_flags":["sh-port"]}`); c != 400 || !strings.Contains(b, `\"sh-port\" is not a flag of scheduler wlc`) {
		t.Fatalf("add wlc with sh-port: %d %s", c, b)
	}
}
