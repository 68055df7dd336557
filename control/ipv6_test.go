package control

import (
	"errors"
	"io"
	"log/slog"
	"strings"
	"testing"

	"github.com/tapvs/tapvs/control/api"
)

// IPv6 keys, real servers and local addresses cross the HTTP edge in the
// paths the client builds ([2001:db8::1]:80, escaped) and reach the
// Manager parsed: with no such service, the answer is "no service", not a
// malformed address; a zone is refused at the edge, naming it.
func TestAPIPathsCarryIPv6(t *testing.T) {
	sock := t.TempDir() + "/tapvs.sock"
	srv := NewServer(newManager(t), slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err := srv.Listen(sock); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Close)
	cl := api.Dial(sock)
	key := api.ServiceKey{Protocol: "tcp", Addr: "[2001:db8::1]:80"}
	for _, tc := range []struct {
		name string
		call func() error
		code string
		want string
	}{
		{"edit service", func() error { return cl.EditService(api.ServiceSpec{ServiceKey: key, Scheduler: "rr"}) }, api.CodeNoService, ""},
		{"delete service", func() error { return cl.DeleteService(key) }, api.CodeNoService, ""},
		{"edit dest", func() error { w := 2; return cl.EditDest(key, api.DestSpec{Addr: "[fd00:20:1::2]:80", Weight: &w}) }, api.CodeNoService, ""},
		{"delete dest", func() error { return cl.DeleteDest(key, "[fd00:20:1::2]:80") }, api.CodeNoService, ""},
		{"add local address", func() error { return cl.AddLocalAddr(key, "fd00:25:84::10") }, api.CodeNoService, ""},
		{"delete local address", func() error { return cl.DeleteLocalAddr(key, "fd00:25:84::10") }, api.CodeNoService, ""},
		{"zoned service", func() error { return cl.DeleteService(api.ServiceKey{Protocol: "tcp", Addr: "[fe80::1%tc]:80"}) }, api.CodeInvalid, `"[fe80::1%tc]:80" has a zone`},
		{"zoned dest", func() error { return cl.DeleteDest(key, "[fd00:20:1::2%ts]:80") }, api.CodeInvalid, `"[fd00:20:1::2%ts]:80" has a zone`},
		{"bare IPv6 dest", func() error { return cl.DeleteDest(key, "fd00:20:1::2") }, api.CodeInvalid, `is not RIP:port (IPv6: [RIP]:port)`},
	} {
		err := tc.call()
		var ae *api.Error
		if !errors.As(err, &ae) || ae.Code != tc.code || !strings.Contains(ae.Message, tc.want) {
			t.Errorf("%s: %v, want code %s saying %q", tc.name, err, tc.code, tc.want)
		}
	}
}
