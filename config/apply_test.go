package config

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/gopacket"
	"github.com/google/gopacket/layers"

	"github.com/tapvs/tapvs/nat"
)

// The reload diff: Apply makes a running balancer what a configuration says
// through one transaction, as daemon.Start and daemon.Reload do.

const configA = `
interfaces:
  client: {name: tc, address: 172.25.254.254/24}
  server: {name: ts, address: 172.25.84.4/24}
services:
  - name: web
    vip: 172.25.254.100
    port: 80
    scheduler: wrr
    local_addresses: [172.25.84.10, 172.25.84.11]
    real_servers:
      - {address: 10.20.1.2, port: 80, weight: 1}
      - {address: 10.20.2.2, port: 80, weight: 2}
  - name: dns
    vip: 172.25.254.100
    port: 53
    protocol: udp
    local_addresses: [172.25.84.20]
    real_servers:
      - {address: 10.20.1.2, port: 53}
`

// configB changes configA in every way a reload can: web is renamed and
// rescheduled, gets SYNPROXY, PROXY headers, its timestamps removed and its
// own timeouts, loses a LIP and a real server, gains a LIP and a real server
// and changes a weight; dns goes; a new service comes.
const configB = `
interfaces:
  client: {name: tc, address: 172.25.254.254/24}
  server: {name: ts, address: 172.25.84.4/24}
services:
  - name: https
    vip: 172.25.254.101
    port: 443
    scheduler: rr
    local_addresses: [172.25.84.30]
    real_servers:
      - {address: 10.20.3.2, port: 443, weight: 3}
  - name: www
    vip: 172.25.254.100
    port: 80
    scheduler: rr
    synproxy: true
    client_address: proxy-v2
    tcp_timestamps: remove
    timeouts: {tcp: {established: 10m}}
    local_addresses: [172.25.84.11, 172.25.84.12]
    real_servers:
      - {address: 10.20.2.2, port: 80, weight: 4}
      - {address: 10.20.3.2, port: 80, weight: 5}
`

func parse(t *testing.T, text string) *Config {
	t.Helper()
	c, err := Parse(text)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// running is a balancer started from c as daemon.Start does, with every
// real server's next hop known.
func running(t *testing.T, c *Config) *nat.Balancer {
	t.Helper()
	bal, err := nat.New(nat.Config{MaxConns: 1000, PortMin: c.PortMin, PortMax: c.PortMax, Timeouts: c.Timeouts,
		ClientNet: c.Client.Address, ServerNet: c.Server.Address, Readers: 1,
		ClientMAC: [6]byte{2, 0, 0, 0, 0, 1}, ServerMAC: [6]byte{2, 0, 0, 0, 0, 2}})
	if err != nil {
		t.Fatal(err)
	}
	if err := apply(bal, c, nil); err != nil {
		t.Fatal(err)
	}
	learnMACs(bal)
	return bal
}

func learnMACs(bal *nat.Balancer) {
	for _, s := range bal.Services() {
		for _, d := range s.Dests() {
			d.SetNextHopMAC([6]byte{2, 0, 0, 0, 0, 9})
		}
	}
}

func apply(bal *nat.Balancer, c *Config, held func(Service, RealServer) bool) error {
	return bal.Update(func(tx *nat.Tx) error { return c.Apply(tx, held) })
}

// listing is everything the balancer publishes of its services, in a
// stable order: two equal listings are the same configuration.
func listing(bal *nat.Balancer) string {
	var svcs []string
	for _, s := range bal.Services() {
		var lips, dests []string
		for _, l := range s.LocalAddrs() {
			lips = append(lips, l.Addr.String())
		}
		for _, d := range s.Dests() {
			dests = append(dests, fmt.Sprintf("%s w%d", d, d.Weight()))
		}
		slices.Sort(lips)
		slices.Sort(dests)
		svcs = append(svcs, fmt.Sprintf("%s name=%s sched=%s synproxy=%v timeouts=%v lips=[%s] rs=[%s]",
			s, s.Name(), s.Scheduler(), s.Synproxy(), s.Timeouts(), strings.Join(lips, " "), strings.Join(dests, ", ")))
	}
	slices.Sort(svcs)
	return strings.Join(svcs, "\n")
}

// short is listing without the timeouts, to write out in a test.
func short(bal *nat.Balancer) string {
	var svcs []string
	for _, line := range strings.Split(listing(bal), "\n") {
		i, j := strings.Index(line, " timeouts="), strings.Index(line, " lips=")
		svcs = append(svcs, line[:i]+line[j:])
	}
	return strings.Join(svcs, "\n")
}

func TestApplyBuildsTheConfiguration(t *testing.T) {
	bal := running(t, parse(t, configA))
	want := `TCP 172.25.254.100:80 name=web sched=wrr synproxy=false lips=[172.25.84.10 172.25.84.11] rs=[10.20.1.2:80 w1, 10.20.2.2:80 w2]
UDP 172.25.254.100:53 name=dns sched=wlc synproxy=false lips=[172.25.84.20] rs=[10.20.1.2:53 w1]`
	if got := short(bal); got != want {
		t.Fatalf("after A:\n%s\nwant:\n%s", got, want)
	}
}

// A to B: every difference is applied, and what stays is the same object
// (a kept service and a kept real server keep their connections and
// counters: a reload does not make them anew).
func TestApplyReloadDiff(t *testing.T) {
	a, b := parse(t, configA), parse(t, configB)
	bal := running(t, a)
	web, err := bal.Service(nat.TCP, netip.MustParseAddr("172.25.254.100"), 80)
	if err != nil {
		t.Fatal(err)
	}
	kept := web.Dest(netip.MustParseAddr("10.20.2.2"), 80)
	keptLIP := web.LocalAddrs()[1]
	gen := bal.Generation()

	if err := apply(bal, b, nil); err != nil {
		t.Fatalf("A to B refused: %v", err)
	}
	want := `TCP 172.25.254.100:80 name=www sched=rr synproxy=true lips=[172.25.84.11 172.25.84.12] rs=[10.20.2.2:80 w4, 10.20.3.2:80 w5]
TCP 172.25.254.101:443 name=https sched=rr synproxy=false lips=[172.25.84.30] rs=[10.20.3.2:443 w3]`
	if got := short(bal); got != want {
		t.Fatalf("after B:\n%s\nwant:\n%s", got, want)
	}
	if bal.Generation() != gen+1 {
		t.Fatalf("generation %d after one reload from %d: want one publication", bal.Generation(), gen)
	}
	web2, err := bal.Service(nat.TCP, netip.MustParseAddr("172.25.254.100"), 80)
	if err != nil {
		t.Fatal(err)
	}
	if web2 != web {
		t.Fatal("the kept service was made anew")
	}
	if web2.ClientAddr() != nat.ClientAddrProxyV2 {
		t.Fatalf("client_address %v after the reload, want proxy-v2", web2.ClientAddr())
	}
	if web2.Timestamps() != nat.TimestampsRemove {
		t.Fatalf("tcp_timestamps %v after the reload, want remove", web2.Timestamps())
	}
	if to := web2.Timeouts(); to.TCP != b.Services[1].Timeouts.TCP || to.TCP[1] != 10*time.Minute {
		t.Fatalf("timeouts not changed: %+v", to)
	}
	if d := web2.Dest(netip.MustParseAddr("10.20.2.2"), 80); d != kept {
		t.Fatal("the kept real server was made anew")
	}
	if l := web2.LocalAddrs(); !slices.Contains(l, keptLIP) {
		t.Fatal("the kept LIP was made anew")
	}
	if _, err := bal.Service(nat.UDP, netip.MustParseAddr("172.25.254.100"), 53); err == nil {
		t.Fatal("dns is still there")
	}
	vips, lips := bal.Addresses()
	slices.SortFunc(vips, netip.Addr.Compare)
	slices.SortFunc(lips, netip.Addr.Compare)
	if fmt.Sprint(vips) != "[172.25.254.100 172.25.254.101]" || fmt.Sprint(lips) != "[172.25.84.11 172.25.84.12 172.25.84.30]" {
		t.Fatalf("addresses: VIPs %v LIPs %v", vips, lips)
	}

	// And back: B to A gives exactly what A gave.
	if err := apply(bal, a, nil); err != nil {
		t.Fatalf("B to A refused: %v", err)
	}
	if got, want := listing(bal), listing(running(t, a)); got != want {
		t.Fatalf("B to A:\n%s\nwant what A alone gives:\n%s", got, want)
	}
	if web.ClientAddr() != nat.ClientAddrNone {
		t.Fatalf("client_address %v back in A, want none", web.ClientAddr())
	}
	if web.Timestamps() != nat.TimestampsTranslate {
		t.Fatalf("tcp_timestamps %v back in A, want translate", web.Timestamps())
	}
}

// Applying what is running changes nothing: no change counted, nothing
// published, the listing the same; a file parsed again is the same too.
func TestApplySameConfigIsANoOp(t *testing.T) {
	for _, text := range []string{configA, configB} {
		c := parse(t, text)
		bal := running(t, c)
		before, gen := listing(bal), bal.Generation()
		for _, again := range []*Config{c, parse(t, text)} {
			var changes int
			err := bal.Update(func(tx *nat.Tx) error {
				err := again.Apply(tx, nil)
				changes = tx.Changes()
				return err
			})
			if err != nil {
				t.Fatal(err)
			}
			if changes != 0 {
				t.Errorf("applying the running configuration made %d changes", changes)
			}
			if bal.Generation() != gen {
				t.Errorf("applying the running configuration published: generation %d, was %d", bal.Generation(), gen)
			}
			if got := listing(bal); got != before {
				t.Errorf("applying the running configuration changed it:\n%s\nwas:\n%s", got, before)
			}
		}
	}
}

// A configuration the balancer refuses changes nothing, though Apply made
// many accepted changes before the refusals; and every refusal is reported
// with its field.
func TestApplyRefusedLeavesTheBalancerAsItWas(t *testing.T) {
	a := parse(t, configA)
	bal := running(t, a)
	before, gen := listing(bal), bal.Generation()

	// B, made wrong past what a file's own validation sees: a real server
	// of one service that another has as a LIP, and a LIP outside the
	// server side.
	b := parse(t, configB)
	b.Services[0].RealServers = append(b.Services[0].RealServers, RealServer{Address: netip.MustParseAddr("172.25.84.12"), Port: 443, Weight: 1})
	b.Services[1].LocalAddresses = append(b.Services[1].LocalAddresses, netip.MustParseAddr("10.9.9.9"))
	err := apply(bal, b, nil)
	if err == nil {
		t.Fatal("accepted")
	}
	for _, want := range []string{
		"services[1].local_addresses[1]: local address 172.25.84.12 is already a real server",
		"services[1].local_addresses[2]: local address 10.9.9.9 is not in the server side's subnet",
	} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not say %q", err, want)
		}
	}
	if got := listing(bal); got != before {
		t.Fatalf("a refused configuration changed the balancer:\n%s\nwas:\n%s", got, before)
	}
	if bal.Generation() != gen {
		t.Fatalf("a refused configuration was published: generation %d, was %d", bal.Generation(), gen)
	}
	// What was refused can still be fixed and applied.
	if err := apply(bal, parse(t, configB), nil); err != nil {
		t.Fatalf("B after the refused B: %v", err)
	}
}

// synFrame is a client's SYN to the VIP.
func synFrame(t *testing.T, client, vip netip.AddrPort) []byte {
	t.Helper()
	eth := &layers.Ethernet{SrcMAC: net.HardwareAddr{2, 0, 0, 0, 0, 7}, DstMAC: net.HardwareAddr{2, 0, 0, 0, 0, 1}, EthernetType: layers.EthernetTypeIPv4}
	ip := &layers.IPv4{Version: 4, TTL: 64, Protocol: layers.IPProtocolTCP, SrcIP: client.Addr().AsSlice(), DstIP: vip.Addr().AsSlice()}
	tcp := &layers.TCP{SrcPort: layers.TCPPort(client.Port()), DstPort: layers.TCPPort(vip.Port()), SYN: true, Seq: 1000, Window: 64240}
	tcp.SetNetworkLayerForChecksum(ip)
	buf := gopacket.NewSerializeBuffer()
	if err := gopacket.SerializeLayers(buf, gopacket.SerializeOptions{FixLengths: true, ComputeChecksums: true}, eth, ip, tcp); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// An address may change roles in one reload (a LIP taken off becomes a
// real server) unless connections still use it as their LIP: then the
// reload is refused, naming the field, and the balancer stays as it was.
// The file alone is valid: only the running state refuses it.
func TestApplyRefusesARetiringLIPInUse(t *testing.T) {
	const b = `
interfaces:
  client: {name: tc, address: 172.25.254.254/24}
  server: {name: ts, address: 172.25.84.4/24}
services:
  - name: web
    vip: 172.25.254.100
    port: 80
    local_addresses: [172.25.84.12]
    real_servers:
      - {address: 10.20.1.2, port: 80}
      - {address: 172.25.84.10, port: 8080}
`
	a := parse(t, strings.Replace(configA, "[172.25.84.10, 172.25.84.11]", "[172.25.84.10]", 1))
	cb := parse(t, b)

	// No connection: the LIP can become a real server.
	idle := running(t, a)
	if err := apply(idle, cb, nil); err != nil {
		t.Fatalf("an idle LIP could not become a real server: %v", err)
	}

	// One connection through the LIP.
	bal := running(t, a)
	f := synFrame(t, netip.MustParseAddrPort("172.25.254.1:40000"), netip.MustParseAddrPort("172.25.254.100:80"))
	if v := bal.Process(nat.ClientSide, &nat.Frame{Buf: f, Len: len(f)}); v != nat.Forward {
		t.Fatalf("SYN: verdict %v, want Forward", v)
	}
	web, _ := bal.Service(nat.TCP, netip.MustParseAddr("172.25.254.100"), 80)
	if n, _, _ := web.LocalAddrs()[0].Stats(); n != 1 {
		t.Fatalf("%d connections on the LIP, want 1", n)
	}
	before, gen := listing(bal), bal.Generation()
	err := apply(bal, cb, nil)
	if err == nil || !strings.Contains(err.Error(), "services[0].real_servers[1]: real server 172.25.84.10:8080 is still the local address of 1 connections") {
		t.Fatalf("reload over a LIP in use: %v", err)
	}
	if got := listing(bal); got != before || bal.Generation() != gen {
		t.Fatalf("the refused reload changed the balancer:\n%s\nwas:\n%s", got, before)
	}
}

// Real servers a failed health check holds out keep the checker's weight
// (or absence): a reload neither restores their weight, nor adds them
// back, nor changes their weight to the new one; the servers not held are
// changed as usual.
func TestApplyLeavesHeldServersToTheChecker(t *testing.T) {
	a := parse(t, configA)
	bal := running(t, a)
	web, _ := bal.Service(nat.TCP, netip.MustParseAddr("172.25.254.100"), 80)
	rs1, rs2 := netip.MustParseAddr("10.20.1.2"), netip.MustParseAddr("10.20.2.2")
	// The checker quiesced rs1 and removed rs2.
	if err := bal.Update(func(tx *nat.Tx) error {
		if err := tx.SetWeight(web, rs1, 80, 0); err != nil {
			return err
		}
		return tx.DeleteDest(web, rs2, 80)
	}); err != nil {
		t.Fatal(err)
	}
	held := func(s Service, rs RealServer) bool {
		return s.Port == 80 && (rs.Address == rs1 || rs.Address == rs2)
	}
	c := parse(t, configA)
	c.Services[0].RealServers[0].Weight = 6
	c.Services[0].RealServers[1].Weight = 7
	c.Services[0].RealServers = append(c.Services[0].RealServers, RealServer{Address: netip.MustParseAddr("10.20.3.2"), Port: 80, Weight: 8})
	if err := apply(bal, c, held); err != nil {
		t.Fatal(err)
	}
	want := `TCP 172.25.254.100:80 name=web sched=wrr synproxy=false lips=[172.25.84.10 172.25.84.11] rs=[10.20.1.2:80 w0, 10.20.3.2:80 w8]`
	if got := strings.Split(short(bal), "\n")[0]; got != want {
		t.Fatalf("with rs1 and rs2 held:\n%s\nwant:\n%s", got, want)
	}
	// Without the hold, the same file restores both.
	if err := apply(bal, c, nil); err != nil {
		t.Fatal(err)
	}
	want = `TCP 172.25.254.100:80 name=web sched=wrr synproxy=false lips=[172.25.84.10 172.25.84.11] rs=[10.20.1.2:80 w6, 10.20.2.2:80 w7, 10.20.3.2:80 w8]`
	if got := strings.Split(short(bal), "\n")[0]; got != want {
		t.Fatalf("without a hold:\n%s\nwant:\n%s", got, want)
	}
}

// A reload (Reconcile against the configuration applied before) applies
// what the file changed, keepalived's model: a runtime change to a value
// whose file text did not change is kept and named; one the file changed
// is overridden and named; a change of the file's over an unchanged
// running value is neither. What was added at run time and the file does
// not declare is kept and named. Apply, which owns everything, takes every
// runtime change away.
func TestReconcileNamesRuntimeChanges(t *testing.T) {
	a := parse(t, configA)
	bal := running(t, a)
	web := func(tx *nat.Tx) *nat.Service {
		s, err := tx.Service(nat.TCP, netip.MustParseAddr("172.25.254.100"), 80)
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	// What tapvsadm and the API did since: on web, which the file will
	// change (its scheduler, and 10.20.2.2's weight), and on dns, which it
	// will not.
	err := bal.Update(func(tx *nat.Tx) error {
		s := web(tx)
		dns, err := tx.Service(nat.UDP, netip.MustParseAddr("172.25.254.100"), 53)
		if err != nil {
			return err
		}
		return errors.Join(tx.SetName(s, "front"), tx.SetScheduler(s, "rr", 0),
			tx.DeleteLocalAddr(s, netip.MustParseAddr("172.25.84.11")),
			tx.SetAllow(s, []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8")}),
			tx.SetLimits(s, nat.Limits{SourceCPS: 5}),
			tx.SetWeight(s, netip.MustParseAddr("10.20.1.2"), 80, 0), // a drain
			tx.SetWeight(s, netip.MustParseAddr("10.20.2.2"), 80, 9),
			func() error { _, err := tx.AddLocalAddr(s, netip.MustParseAddr("172.25.84.12")); return err }(),
			func() error {
				_, err := tx.AddService(nat.ServiceConfig{Addr: netip.MustParseAddr("172.25.254.100"), Port: 54, Protocol: nat.UDP, Scheduler: "rr"})
				return err
			}(),
			tx.DeleteDest(dns, netip.MustParseAddr("10.20.1.2"), 53))
	})
	if err != nil {
		t.Fatal(err)
	}
	// The file's own changes: web's scheduler wrr -> sh (the runtime rr is
	// overridden), 10.20.2.2's weight 2 -> 5 (the runtime 9 is
	// overridden), limits to source_cps 5 (what runs already: nothing to
	// name), and dns's scheduler wlc -> rr (nothing ran otherwise: applied,
	// not named).
	bText := strings.Replace(configA, "{address: 10.20.2.2, port: 80, weight: 2}", "{address: 10.20.2.2, port: 80, weight: 5}", 1)
	bText = strings.Replace(bText, "    scheduler: wrr\n", "    scheduler: sh\n    limits: {source_cps: 5}\n", 1)
	bText = strings.Replace(bText, "    protocol: udp\n", "    protocol: udp\n    scheduler: rr\n", 1)
	b := parse(t, bText)
	var drift Drift
	if err := bal.Update(func(tx *nat.Tx) error { var err error; drift, err = b.Reconcile(tx, a, nil); return err }); err != nil {
		t.Fatal(err)
	}
	wantReverted := []string{
		"tcp 172.25.254.100:80 scheduler rr -> sh",
		"tcp 172.25.254.100:80 real server 10.20.2.2:80 weight 9 -> weight 5",
	}
	wantKept := []string{
		"tcp 172.25.254.100:80 local address 172.25.84.12",
		"udp 172.25.254.100:54",
		`tcp 172.25.254.100:80 name "front" (file: "web")`,
		"tcp 172.25.254.100:80 allow [10.0.0.0/8] (file: [])",
		"tcp 172.25.254.100:80 local address 172.25.84.11 deleted (declared in the file)",
		"tcp 172.25.254.100:80 real server 10.20.1.2:80 weight 0 (file: weight 1)",
		"udp 172.25.254.100:53 real server 10.20.1.2:53 deleted (file: weight 1)",
	}
	if got := strings.Join(Texts(drift.Reverted), "\n"); got != strings.Join(wantReverted, "\n") {
		t.Errorf("reverted:\n%s\nwant:\n%s", got, strings.Join(wantReverted, "\n"))
	}
	if got := strings.Join(Texts(drift.Kept), "\n"); got != strings.Join(wantKept, "\n") {
		t.Errorf("kept:\n%s\nwant:\n%s", got, strings.Join(wantKept, "\n"))
	}
	for _, n := range drift.Kept {
		if declared := n.Text != wantKept[0] && n.Text != wantKept[1]; n.Declared != declared {
			t.Errorf("%q: declared %v, want %v", n.Text, n.Declared, declared)
		}
	}
	want := `TCP 172.25.254.100:80 name=front sched=sh synproxy=false lips=[172.25.84.10 172.25.84.12] rs=[10.20.1.2:80 w0, 10.20.2.2:80 w5]
UDP 172.25.254.100:53 name=dns sched=rr synproxy=false lips=[172.25.84.20] rs=[]
UDP 172.25.254.100:54 name= sched=rr synproxy=false lips=[] rs=[]`
	if got := short(bal); got != want {
		t.Fatalf("after the reload:\n%s\nwant:\n%s", got, want)
	}
	// A second reload of the same file keeps (and names) the same
	// runtime changes, changes nothing and overrides nothing; so does
	// Keeps, which changes nothing either.
	for _, dry := range []bool{false, true} {
		gen := bal.Generation()
		var changes int
		if err := bal.Update(func(tx *nat.Tx) error {
			var err error
			if dry {
				drift = Drift{Kept: b.Keeps(tx, nil, nil)}
			} else {
				drift, err = b.Reconcile(tx, b, nil)
			}
			changes = tx.Changes()
			return err
		}); err != nil {
			t.Fatal(err)
		}
		if len(drift.Reverted) != 0 || strings.Join(Texts(drift.Kept), "\n") != strings.Join(wantKept, "\n") || changes != 0 || bal.Generation() != gen {
			t.Fatalf("the same file again (Keeps: %v): %d changes, generation %d from %d, %+v", dry, changes, bal.Generation(), gen, drift)
		}
	}
	// Keeps of one service (asked twice, as a batch's two changes to it
	// do) names what it keeps of that one only, once.
	var named []Named
	_ = bal.Update(func(tx *nat.Tx) error {
		dns := ServiceKey{Protocol: nat.UDP, VIP: netip.MustParseAddr("172.25.254.100"), Port: 53}
		named = b.Keeps(tx, []ServiceKey{dns, dns}, nil)
		return nil
	})
	if got := strings.Join(Texts(named), "\n"); got != wantKept[6] {
		t.Fatalf("Keeps of dns: %q, want %q", got, wantKept[6])
	}
	// Apply owns everything: the runtime changes and additions go.
	if err := apply(bal, b, nil); err != nil {
		t.Fatal(err)
	}
	if got, want := listing(bal), listing(running(t, b)); got != want {
		t.Fatalf("Apply kept runtime changes:\n%s\nwant:\n%s", got, want)
	}
}

// The operator's drain (ipvsadm -e -w 0) survives a reload for an
// unrelated edit of the file; an edit of that server's weight overrides it
// and is named. A declared service deleted at run time stays deleted
// until the file changes it; then it is added back whole.
func TestReconcileKeepsADrainUntilTheFileChangesIt(t *testing.T) {
	a := parse(t, configA)
	bal := running(t, a)
	rs1 := netip.MustParseAddr("10.20.1.2")
	if err := bal.Update(func(tx *nat.Tx) error {
		web, err := tx.Service(nat.TCP, netip.MustParseAddr("172.25.254.100"), 80)
		if err != nil {
			return err
		}
		dns, err := tx.Service(nat.UDP, netip.MustParseAddr("172.25.254.100"), 53)
		if err != nil {
			return err
		}
		tx.DeleteService(dns)
		return tx.SetWeight(web, rs1, 80, 0)
	}); err != nil {
		t.Fatal(err)
	}
	reload := func(prev *Config, text string) (*Config, Drift) {
		t.Helper()
		c := parse(t, text)
		var d Drift
		if err := bal.Update(func(tx *nat.Tx) error { var err error; d, err = c.Reconcile(tx, prev, nil); return err }); err != nil {
			t.Fatal(err)
		}
		return c, d
	}
	// Unrelated: the other server's weight.
	b, d := reload(a, strings.Replace(configA, "port: 80, weight: 2}", "port: 80, weight: 3}", 1))
	if got := strings.Join(Texts(d.Kept), "; "); got != "tcp 172.25.254.100:80 real server 10.20.1.2:80 weight 0 (file: weight 1); udp 172.25.254.100:53 deleted (declared in the file)" || len(d.Reverted) != 0 {
		t.Fatalf("an unrelated edit: %+v", d)
	}
	want := `TCP 172.25.254.100:80 name=web sched=wrr synproxy=false lips=[172.25.84.10 172.25.84.11] rs=[10.20.1.2:80 w0, 10.20.2.2:80 w3]`
	if got := short(bal); got != want {
		t.Fatalf("after an unrelated edit:\n%s\nwant:\n%s", got, want)
	}
	// The drained server's weight and the deleted service, edited.
	text := strings.Replace(configA, "port: 80, weight: 2}", "port: 80, weight: 3}", 1)
	text = strings.Replace(text, "{address: 10.20.1.2, port: 80, weight: 1}", "{address: 10.20.1.2, port: 80, weight: 4}", 1)
	text = strings.Replace(text, "    protocol: udp\n", "    protocol: udp\n    scheduler: rr\n", 1)
	_, d = reload(b, text)
	if got := strings.Join(Texts(d.Reverted), "; "); got != "tcp 172.25.254.100:80 real server 10.20.1.2:80 weight 0 -> weight 4; udp 172.25.254.100:53 deleted -> added" || len(d.Kept) != 0 {
		t.Fatalf("the file edits the drained server and the deleted service: %+v", d)
	}
	want = `TCP 172.25.254.100:80 name=web sched=wrr synproxy=false lips=[172.25.84.10 172.25.84.11] rs=[10.20.1.2:80 w4, 10.20.2.2:80 w3]
UDP 172.25.254.100:53 name=dns sched=rr synproxy=false lips=[172.25.84.20] rs=[10.20.1.2:53 w1]`
	if got := short(bal); got != want {
		t.Fatalf("after the edit:\n%s\nwant:\n%s", got, want)
	}
}

// The global timeouts: a change in the file reaches the balancer's
// defaults (what later services get and tapvsadm -L --timeout shows) as
// well as the declared services; a runtime --set is kept until the file
// changes them.
func TestReconcileAppliesTheDefaultTimeouts(t *testing.T) {
	a := parse(t, configA)
	bal := running(t, a)
	// ipvsadm --set 100 0 0: the defaults and every service.
	if err := bal.Update(func(tx *nat.Tx) error { return tx.SetAllTimeouts(100*time.Second, 0, 0) }); err != nil {
		t.Fatal(err)
	}
	reload := func(prev, c *Config) Drift {
		t.Helper()
		var d Drift
		if err := bal.Update(func(tx *nat.Tx) error { var err error; d, err = c.Reconcile(tx, prev, nil); return err }); err != nil {
			t.Fatal(err)
		}
		return d
	}
	d := reload(a, a)
	if got := strings.Join(Texts(d.Kept), "; "); !strings.HasPrefix(got, "timeouts (tcp 1m40s, tcpfin 7s, udp 5m0s) (file: (tcp 1m30s, tcpfin 7s, udp 5m0s))") || len(d.Reverted) != 0 {
		t.Fatalf("--set, the file unchanged: %+v", d)
	}
	if got := bal.DefaultTimeouts().Established(); got != 100*time.Second {
		t.Fatalf("default tcp timeout %v after a reload of the unchanged file, want the --set 1m40s", got)
	}
	b := parse(t, strings.Replace(configA, "services:\n", "timeouts: {tcp: {established: 10m}, udp: 60s}\nservices:\n", 1))
	d = reload(a, b)
	if got := strings.Join(Texts(d.Reverted), "; "); !strings.HasPrefix(got, "timeouts (tcp 1m40s, tcpfin 7s, udp 5m0s) -> (tcp 10m0s, tcpfin 7s, udp 1m0s); tcp 172.25.254.100:80 timeouts") {
		t.Fatalf("the file's timeouts changed: reverted %q", got)
	}
	if got := bal.DefaultTimeouts(); got != b.Timeouts || got.Established() != 10*time.Minute {
		t.Fatalf("default timeouts %+v after the file changed them, want %+v", got, b.Timeouts)
	}
	// A service added at run time gets them.
	if err := bal.Update(func(tx *nat.Tx) error {
		_, err := tx.AddService(nat.ServiceConfig{Addr: netip.MustParseAddr("172.25.254.100"), Port: 81, Protocol: nat.TCP, Scheduler: "rr"})
		return err
	}); err != nil {
		t.Fatal(err)
	}
	s, err := bal.Service(nat.TCP, netip.MustParseAddr("172.25.254.100"), 81)
	if err != nil || s.Timeouts() != b.Timeouts {
		t.Fatalf("a service added after the reload: timeouts %+v, want the file's %+v (%v)", s.Timeouts(), b.Timeouts, err)
	}
}
