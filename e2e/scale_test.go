package e2e

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/tapvs/tapvs/config"
	"github.com/tapvs/tapvs/control/api"
	"github.com/tapvs/tapvs/lab"
)

// manyServices is n services, each on its own VIP (100.64.0.0/10), with
// the lab's two LIPs and two real servers.
func manyServices(n int) string {
	var b strings.Builder
	for i := range n {
		vip := netip.AddrFrom4([4]byte{100, 64 + byte(i>>16), byte(i >> 8), byte(i)})
		fmt.Fprintf(&b, "\n  - vip: %s\n    port: 80\n    scheduler: rr\n    local_addresses: [172.25.84.10, 172.25.84.11]\n    real_servers: [{address: 10.20.1.2, port: 80}, {address: 10.20.2.2, port: 80}]", vip)
	}
	return b.String()
}

// BenchmarkDaemonLoadServices starts tapvs on TAPs in a lab with n
// services and reports, each in its own figure: reading and checking the
// file, starting (TAPs, the balancer's transaction, the stack answering for
// every VIP), resolving every real server's next hop, a reload that
// changes one service, the heap the running tapvs holds per service, and
// the CPU an idle tapvs spends on them (over 10 s).
//
//	go test -run '^$' -bench DaemonLoad -benchtime 1x ./e2e
func BenchmarkDaemonLoadServices(b *testing.B) {
	for _, n := range []int{10000, 100000} {
		b.Run(fmt.Sprintf("services=%d", n), func(b *testing.B) {
			for b.Loop() {
				b.StopTimer()
				need(b)
				claim(b, nsPrefix+"ld")
				top := lab.NewTopology(nsPrefix+"ld", nsPrefix+"ldc", nsPrefix+"lds")
				top.Socket = filepath.Join(b.TempDir(), "tapvs.sock")
				if err := top.Build(); err != nil {
					b.Fatal(err)
				}
				b.Cleanup(func() { top.Destroy() })
				text := top.Config(manyServices(n), "")
				b.StartTimer()
				t0 := time.Now()
				cfg, err := config.Parse(text)
				if err != nil {
					b.Fatal(err)
				}
				t1 := time.Now()
				log := slog.New(slog.NewTextHandler(io.Discard, nil))
				d, err := top.StartTapvs(context.Background(), cfg, log)
				if err != nil {
					b.Fatal(err)
				}
				t2 := time.Now()
				b.Cleanup(d.Close)
				if got := len(d.Balancer.Services()); got != n {
					b.Fatalf("%d services running", got)
				}
				path := filepath.Join(b.TempDir(), "tapvs.yaml")
				if err := os.WriteFile(path, []byte(strings.Replace(text, "vip: 100.64.0.0\n", "vip: 100.127.255.254\n", 1)), 0o644); err != nil {
					b.Fatal(err)
				}
				t3 := time.Now()
				if err := d.Reload(path); err != nil {
					b.Fatal(err)
				}
				t4 := time.Now()
				b.StopTimer()
				// What keeping n services costs an idle tapvs: the address
				// sync every second, the next-hop refresh every 5 s.
				var r0, r1 syscall.Rusage
				syscall.Getrusage(syscall.RUSAGE_SELF, &r0)
				time.Sleep(10 * time.Second)
				syscall.Getrusage(syscall.RUSAGE_SELF, &r1)
				cpu := time.Duration(r1.Utime.Nano() + r1.Stime.Nano() - r0.Utime.Nano() - r0.Stime.Nano())
				b.ReportMetric(100*cpu.Seconds()/10, "idle-cpu-%")
				runtime.GC()
				var ms runtime.MemStats
				runtime.ReadMemStats(&ms)
				b.ReportMetric(t1.Sub(t0).Seconds(), "parse-s")
				b.ReportMetric(t2.Sub(t1).Seconds(), "start+resolve-s")
				b.ReportMetric(t4.Sub(t3).Seconds(), "reload-s")
				b.ReportMetric(float64(ms.HeapAlloc)/float64(n), "heap-B/service")
				d.Close()
				top.Destroy()
				b.StartTimer()
			}
		})
	}
}

// BenchmarkDaemonOneRequestAtATime runs tapvs on TAPs with n services and
// then adds services the way an ipvsadm script does, one control request
// each (-A, -P twice, -a twice: five requests a service), through the
// control socket. ns/request must not grow with n: a script of single
// commands scales as a batch does.
//
//	go test -run '^$' -bench DaemonOneRequest -benchtime 100x ./e2e
func BenchmarkDaemonOneRequestAtATime(b *testing.B) {
	for _, n := range []int{1000, 10000} {
		b.Run(fmt.Sprintf("services=%d", n), func(b *testing.B) {
			need(b)
			claim(b, nsPrefix+"ld")
			top := lab.NewTopology(nsPrefix+"ld", nsPrefix+"ldc", nsPrefix+"lds")
			top.Socket = filepath.Join(b.TempDir(), "tapvs.sock")
			if err := top.Build(); err != nil {
				b.Fatal(err)
			}
			b.Cleanup(func() { top.Destroy() })
			cfg, err := config.Parse(top.Config(manyServices(n), ""))
			if err != nil {
				b.Fatal(err)
			}
			d, err := top.StartTapvs(context.Background(), cfg, slog.New(slog.NewTextHandler(io.Discard, nil)))
			if err != nil {
				b.Fatal(err)
			}
			b.Cleanup(d.Close)
			cl := api.Dial(top.Socket)
			i := n
			requests := 0
			for b.Loop() {
				vip := netip.AddrFrom4([4]byte{100, 64 + byte(i>>16), byte(i >> 8), byte(i)})
				key := api.ServiceKey{Protocol: "tcp", Addr: netip.AddrPortFrom(vip, 80).String()}
				if err := cl.AddService(api.ServiceSpec{ServiceKey: key, Scheduler: "rr"}); err != nil {
					b.Fatal(err)
				}
				for _, lip := range []string{"172.25.84.10", "172.25.84.11"} {
					if err := cl.AddLocalAddr(key, lip); err != nil {
						b.Fatal(err)
					}
				}
				for _, rs := range []string{"10.20.1.2:80", "10.20.2.2:80"} {
					if err := cl.AddDest(key, api.DestSpec{Addr: rs}); err != nil {
						b.Fatal(err)
					}
				}
				i++
				requests += 5
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(requests), "ns/request")
			if got := len(d.Balancer.Services()); got != i {
				b.Fatalf("%d services running, want %d", got, i)
			}
		})
	}
}
