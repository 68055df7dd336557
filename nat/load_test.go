package nat

import (
	"fmt"
	"net/netip"
	"runtime"
	"testing"
)

// loadServices adds n services, each with 2 LIPs and 2 real servers, in one
// transaction.
func loadServices(tb testing.TB, b *Balancer, n int) {
	err := b.Update(func(tx *Tx) error {
		for i := range n {
			vip := netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)})
			s, err := tx.AddService(ServiceConfig{Addr: vip, Port: 80, Protocol: TCP, Scheduler: "wrr"})
			if err != nil {
				return err
			}
			for l := range 2 {
				if _, err := tx.AddLocalAddr(s, netip.AddrFrom4([4]byte{172, 25, 84, byte(10 + l)})); err != nil {
					return err
				}
			}
			for r := range 2 {
				if _, err := tx.AddDest(s, netip.AddrFrom4([4]byte{192, 168, byte(r), byte(i)}), 8080, 1); err != nil {
					return err
				}
			}
		}
		return nil
	})
	if err != nil {
		tb.Fatal(err)
	}
}

// BenchmarkLoadServices loads n services (2 LIPs and 2 real servers each)
// into an empty balancer in one transaction, as a configuration file or a
// restore does, and reports the heap the loaded services hold.
func BenchmarkLoadServices(b *testing.B) {
	for _, n := range []int{1000, 10000, 100000} {
		b.Run(fmt.Sprintf("services=%d", n), func(b *testing.B) {
			var heap uint64
			for b.Loop() {
				bal, _ := New(Config{MaxConns: 100, PortMin: 5000, PortMax: 65535, Timeouts: DefaultTimeouts(), Readers: 4}) // 2 queues a side
				loadServices(b, bal, n)
				b.StopTimer()
				runtime.GC()
				var ms runtime.MemStats
				runtime.ReadMemStats(&ms)
				heap = ms.HeapAlloc
				if len(bal.Services()) != n {
					b.Fatalf("%d services", len(bal.Services()))
				}
				b.StartTimer()
			}
			b.ReportMetric(float64(heap)/float64(n), "heap-B/service")
		})
	}
}

// BenchmarkClearServices deletes n services in one transaction (ipvsadm
// -C, or a reload that replaces them all).
func BenchmarkClearServices(b *testing.B) {
	for _, n := range []int{10000, 100000} {
		b.Run(fmt.Sprintf("services=%d", n), func(b *testing.B) {
			for b.Loop() {
				b.StopTimer()
				bal, _ := New(Config{MaxConns: 100, PortMin: 5000, PortMax: 65535, Timeouts: DefaultTimeouts(), Readers: 4})
				loadServices(b, bal, n)
				b.StartTimer()
				bal.Clear()
				if len(bal.Services()) != 0 {
					b.Fatal("not cleared")
				}
			}
		})
	}
}

// BenchmarkManyServers adds n real servers to one service in one
// transaction: each add is checked against the others in O(1).
func BenchmarkManyServers(b *testing.B) {
	for _, n := range []int{10000, 50000} {
		b.Run(fmt.Sprintf("servers=%d", n), func(b *testing.B) {
			for b.Loop() {
				bal, _ := New(Config{MaxConns: 100, PortMin: 5000, PortMax: 65535, Timeouts: DefaultTimeouts(), Readers: 4})
				err := bal.Update(func(tx *Tx) error {
					s, err := tx.AddService(ServiceConfig{Addr: netip.MustParseAddr("10.0.0.1"), Port: 80, Protocol: TCP, Scheduler: "wrr"})
					if err != nil {
						return err
					}
					for i := range n {
						if _, err := tx.AddDest(s, netip.AddrFrom4([4]byte{192, 168, byte(i >> 8), byte(i)}), uint16(1+i>>16), 1); err != nil {
							return err
						}
					}
					return nil
				})
				if err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkChangeOneAtATime adds services to a balancer that holds n the
// way an ipvsadm script does: a transaction per command (-A, -P twice, -a
// twice). ns/op is one change's cost, and must not grow with n: at 10 000
// services a script of single commands should go as a batch does.
func BenchmarkChangeOneAtATime(b *testing.B) {
	for _, n := range []int{1000, 5000, 10000} {
		b.Run(fmt.Sprintf("services=%d", n), func(b *testing.B) {
			bal, _ := New(Config{MaxConns: 100, PortMin: 5000, PortMax: 65535, Timeouts: DefaultTimeouts(), Readers: 4})
			loadServices(b, bal, n)
			i := n
			changes := 0
			for b.Loop() {
				addOneByOne(b, bal, i)
				i++
				changes += 5
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(changes), "ns/change")
		})
	}
}

// addOneByOne adds service i of loadServices' numbering, its 2 LIPs and 2
// real servers, each in a transaction of its own.
func addOneByOne(tb testing.TB, bal *Balancer, i int) {
	vip := netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)})
	s, err := bal.AddService(ServiceConfig{Addr: vip, Port: 80, Protocol: TCP, Scheduler: "wrr"})
	if err != nil {
		tb.Fatal(err)
	}
	for l := range 2 {
		if _, err := bal.AddLocalAddr(s, netip.AddrFrom4([4]byte{172, 25, 84, byte(10 + l)})); err != nil {
			tb.Fatal(err)
		}
	}
	for r := range 2 {
		if err := bal.Update(func(tx *Tx) error {
			_, err := tx.AddDest(s, netip.AddrFrom4([4]byte{192, 168, byte(r), byte(i)}), 8080, 1)
			return err
		}); err != nil {
			tb.Fatal(err)
		}
	}
}
