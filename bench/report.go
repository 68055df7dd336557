package bench

import (
	"fmt"
	"image/color"
	"strings"
	"time"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/plotutil"
	"gonum.org/v1/plot/vg"
)

func find(rs []Result, name string) Result {
	for _, r := range rs {
		if r.Path == name {
			return r
		}
	}
	return Result{}
}

func ratio(a, b float64) string {
	if b == 0 {
		return "—"
	}
	return fmt.Sprintf("%.2f×", a/b)
}

func ms(d time.Duration) string { return fmt.Sprintf("%.2f", float64(d)/float64(time.Millisecond)) }

// table renders the results, the ratios and the targets.
func table(rs []Result, machine string, o Options) string {
	var b strings.Builder
	fmt.Fprintf(&b, "Machine: %s. Each cell: median of %d run(s) of %s.\n\n", machine, max(o.Runs, 1), o.Duration)
	b.WriteString("| path | iperf3 1 stream Gbit/s | 4 streams Gbit/s | short conns/s | keep-alive req/s | p50 ms | p99 ms | UDP 64 B kpps | CPU-s/GB | CPU-s/1k conns |\n")
	b.WriteString("|---|---|---|---|---|---|---|---|---|---|\n")
	for _, r := range rs {
		udp := "n/a (TCP only)"
		if r.UDPpps > 0 {
			udp = fmt.Sprintf("%.0f", r.UDPpps/1000)
		}
		fmt.Fprintf(&b, "| %s | %.2f | %.2f | %.0f | %.0f | %s | %s | %s | %.2f | %.3f |\n", r.Path, r.Gbps1, r.Gbps4, r.ShortCPS, r.KeepRPS, ms(r.P50), ms(r.P99), udp, r.CPUPerGB, r.CPUPerKConn)
	}
	k, h, t, s := find(rs, "nftables"), find(rs, "haproxy"), find(rs, "tapvs"), find(rs, "tapvs+synproxy")
	b.WriteString("\n| tapvs vs | 1 stream | 4 streams | short conns/s | keep-alive req/s | p50 latency | UDP pps |\n|---|---|---|---|---|---|---|\n")
	fmt.Fprintf(&b, "| kernel nftables FULLNAT | %s | %s | %s | %s | %s | %s |\n", ratio(t.Gbps1, k.Gbps1), ratio(t.Gbps4, k.Gbps4), ratio(t.ShortCPS, k.ShortCPS), ratio(t.KeepRPS, k.KeepRPS), ratio(float64(t.P50), float64(k.P50)), ratio(t.UDPpps, k.UDPpps))
	fmt.Fprintf(&b, "| HAProxy | %s | %s | %s | %s | %s | — |\n", ratio(t.Gbps1, h.Gbps1), ratio(t.Gbps4, h.Gbps4), ratio(t.ShortCPS, h.ShortCPS), ratio(t.KeepRPS, h.KeepRPS), ratio(float64(t.P50), float64(h.P50)))
	fmt.Fprintf(&b, "| tapvs (synproxy vs without) | %s | %s | %s | %s | %s | — |\n", ratio(s.Gbps1, t.Gbps1), ratio(s.Gbps4, t.Gbps4), ratio(s.ShortCPS, t.ShortCPS), ratio(s.KeepRPS, t.KeepRPS), ratio(float64(s.P50), float64(t.P50)))
	check := func(name string, got, want float64, atLeast bool) {
		ok := got >= want
		if !atLeast {
			ok = got <= want
		}
		mark := "met"
		if !ok {
			mark = "**missed**"
		}
		cmp := "≥"
		if !atLeast {
			cmp = "≤"
		}
		fmt.Fprintf(&b, "| %s | %.2f× | %s %.2f× | %s |\n", name, got, cmp, want, mark)
	}
	b.WriteString("\n| target | measured | wanted | |\n|---|---|---|---|\n")
	q := func(a, c float64) float64 {
		if c == 0 {
			return 0
		}
		return a / c
	}
	check("1 stream vs HAProxy", q(t.Gbps1, h.Gbps1), 1.5, true)
	check("1 stream vs kernel FULLNAT", q(t.Gbps1, k.Gbps1), 0.5, true)
	check("4 streams vs HAProxy", q(t.Gbps4, h.Gbps4), 1.5, true)
	check("short conns/s vs HAProxy", q(t.ShortCPS, h.ShortCPS), 1.3, true)
	check("short conns/s vs kernel FULLNAT", q(t.ShortCPS, k.ShortCPS), 0.8, true)
	check("synproxy short conns/s vs without", q(s.ShortCPS, t.ShortCPS), 0.9, true)
	check("keep-alive p50 latency vs kernel FULLNAT", q(float64(t.P50), float64(k.P50)), 1.3, false)
	for _, r := range rs {
		if r.Notes != "" {
			fmt.Fprintf(&b, "\n%s counters during its runs: %s.\n", r.Path, r.Notes)
		}
	}
	b.WriteString("\nCPU: tapvs and HAProxy are their own processes' CPU time; the kernel paths are the machine's softirq time, where their forwarding runs (an estimate).\n")
	return b.String()
}

// chart draws each path's figures relative to kernel nftables FULLNAT.
func chart(rs []Result, file string) error {
	k := find(rs, "nftables")
	p := plot.New()
	p.Title.Text = "tapvs vs kernel FULLNAT (=1.0) and HAProxy, one run"
	p.Y.Label.Text = "relative to kernel nftables FULLNAT"
	metrics := []struct {
		name string
		get  func(Result) float64
	}{
		{"iperf3 1 stream", func(r Result) float64 { return r.Gbps1 }},
		{"iperf3 4 streams", func(r Result) float64 { return r.Gbps4 }},
		{"short conns/s", func(r Result) float64 { return r.ShortCPS }},
		{"keep-alive req/s", func(r Result) float64 { return r.KeepRPS }},
	}
	w := vg.Points(12)
	for i, r := range rs {
		var vals plotter.Values
		for _, m := range metrics {
			base := m.get(k)
			if base == 0 {
				base = 1
			}
			vals = append(vals, m.get(r)/base)
		}
		bars, err := plotter.NewBarChart(vals, w)
		if err != nil {
			return err
		}
		bars.Color = plotutil.Color(i)
		bars.LineStyle.Color = color.Gray{Y: 64}
		bars.Offset = vg.Length(i-len(rs)/2) * w
		p.Add(bars)
		p.Legend.Add(r.Path, bars)
	}
	names := make([]string, len(metrics))
	for i, m := range metrics {
		names[i] = m.name
	}
	p.NominalX(names...)
	p.Legend.Top = true
	return p.Save(9*vg.Inch, 5*vg.Inch, file)
}
