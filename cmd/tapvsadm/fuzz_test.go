package main

import (
	"net/netip"
	"strconv"
	"strings"
	"testing"
)

// FuzzParse reads any command line as ipvsadm's grammar. Nothing panics, a
// refusal is one line, and an accepted command is whole: its service,
// real server and values are what the API can take, and a rule turns into
// an operation.
func FuzzParse(f *testing.F) {
	for _, s := range []string{
		"-A -t 172.25.254.100:80 -s wrr -j enable",
		"-a -t 172.25.254.100:80 -r 10.20.1.2:80 -b -w 3",
		"-a -t 172.25.254.100:80 -r 10.20.1.2 -r 10.20.1.3",
		"-P -t 172.25.254.100:80 -z 172.25.84.10",
		"-lnc",
		"-L -n --stats --rate --exact",
		"--set 900 120 300",
		"--capture -t 172.25.254.100:80",
		"--capture=x.pcap -u 172.25.254.100:53 --count 10",
		"-E -t 1.1.1.1:80 -p -j disable",
		"-A -t [::1]:80",
		"-A -t [2001:db8::1]:80 -s wrr",
		"-A -t 172.25.254.100:80 -s sh --sched-flags sh-fallback,sh-port",
		"-a -t [2001:db8::1]:80 -r [fd00:20:1::2]:80 -b -w 3",
		"-a -u [2001:db8::53]:domain -r fd00:20:1::53",
		"-P -t [2001:db8::1]:80 -z fd00:25:84::10",
		"-Q -t [2001:db8::1]:80 -z [fd00:25:84::10]:0",
		"-A -t [fe80::1%eth0]:80",
		"-lnc -t [2001:db8::1]:80",
		"-G -t 2001:db8::1",
		"-Z -C -R -S",
		"--add-blklst -t 172.25.254.100:80 -k 10.0.0.0/8",
		"--del-whtlst -u 172.25.254.100:53 --whtlst-address=192.0.2.7",
		"--get-blklst -t 172.25.254.100:80",
		"-E -t 172.25.254.100:80 --source-cps 10 --source-conns 2 --half-open 100",
		// Issue 20: -Z of one service; timeouts below a second.
		"-Z -t 172.25.254.100:80",
		// Issue 25: match services (-f names a selector of marks:).
		"-A -f 1 -s rr -p 600",
		"-a -f 1 -r 10.20.1.2 -b",
		"-a -f4294967295 -r [fd00:20:1::2]:http -w 0",
		"-A -f 1 -6 -p -M 64",
		"-lnc -f 7 -6",
		"-Z -f 0x1",
		"--health -f 1 --off",
		// Issue 25: persistence.
		"-A -t 172.25.254.100:0 -s rr -p 600 -M 255.255.255.0",
		"-E -u [2001:db8::1]:53 -p1 -M 64",
		"-Ln --persistent-conn",
		"-Z -u [2001:db8::53]:53 -n",
		"-E -t 172.25.254.100:80 -V 0",
		"--set 0 0 1",
		// Issue 21: the BGP listing and the drain.
		"-ln --bgp",
		"--bgp -c",
		"--drain --wait --timeout 90s",
		"--drain --wait --timeout=-1s",
		"--undrain --wait",
		"--drain-status",
		// Issue 25: a service's health check at run time.
		"--health -t 172.25.254.100:80 --check type=http,http_path=/healthz,rise=2,fall=3",
		"--health -u 172.25.254.100:53 --check type=misc,script='/bin/check a',misc_dynamic=true",
		"--health -t 172.25.254.100:80 --check rise=x,,=",
		"--health -t 172.25.254.100:80 --off --check type=tcp",
		// Issue 25: thresholds.
		"-a -t 172.25.254.100:80 -r 10.20.1.2 -w 1 -x 100 -y 50",
		"-e -t 172.25.254.100:80 -r 10.20.1.2:80 --u-threshold=2 --l-threshold 1",
		"-e -u [2001:db8::53]:53 -r [fd00:20:1::53]:53 -y0 -x4294967296",
		"-Ln --thresholds -t 172.25.254.100:80",
		// Issue 26: faults and events.
		"--fault -t 172.25.254.100:80 --with direction=to_client,loss=0.05",
		"--fault -r [fd00:20:1::2]:80 --with blackhole=1,every=-3,syn=refuse",
		"--fault --client 10.0.0.0/8 --off -f 7",
		"--fault --with loss=,=,blackhole --client ::/0",
		"--events --kind server_down,conn -t 172.25.254.100:80 --count 3",
		"--events --kind=,, -f 4294967296 --count -1",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, line string) {
		args := strings.Fields(line)
		c, err := parse(args)
		if err != nil {
			if strings.Contains(err.Error(), "\n") {
				t.Fatalf("%q: a refusal in more than one line: %q", line, err)
			}
			return
		}
		if c.op == "" {
			t.Fatalf("%q: accepted without a command", line)
		}
		if c.proto == fwm {
			if n, err := strconv.ParseUint(c.service, 10, 32); err != nil || n == 0 || strconv.FormatUint(n, 10) != c.service {
				t.Fatalf("%q: fwmark %q", line, c.service)
			}
		} else if c.service != "" {
			if ap, err := netip.ParseAddrPort(c.service); err != nil || c.proto != "tcp" && c.proto != "udp" {
				t.Fatalf("%q: service %q %q", line, c.proto, c.service)
			} else if ap.Port() == 0 && c.op != "list" && c.op != "zero" {
				_ = ap // port 0 is the API's to refuse, with the reason
			}
		}
		if c.laddr != "" {
			if a, err := netip.ParseAddr(c.laddr); err != nil || a.Zone() != "" {
				t.Fatalf("%q: local address %q", line, c.laddr)
			}
		}
		for _, ap := range []string{c.service, c.real} {
			if ap == c.service && c.proto == fwm {
				continue
			}
			if a, err := netip.ParseAddrPort(ap); ap != "" && (err != nil || a.Addr().Zone() != "") {
				t.Fatalf("%q: address %q", line, ap)
			}
		}
		if c.weight != nil && (*c.weight < 0 || *c.weight > 65535) {
			t.Fatalf("%q: weight %d", line, *c.weight)
		}
		if c.op == "capture" && (c.capture == "" || strings.HasPrefix(c.capture, "-") && c.capture != "-") {
			t.Fatalf("%q: capture file %q", line, c.capture)
		}
		if c.wait && c.op != "drain" || c.timeout < 0 || c.timeout != 0 && !c.wait {
			t.Fatalf("%q: --wait %v --timeout %s with %s", line, c.wait, c.timeout, c.op)
		}
		if (c.op == "bgp" || strings.Contains(c.op, "drain")) && (c.service != "" || c.real != "" || c.conns) {
			t.Fatalf("%q: %s with a service's options", line, c.op)
		}
		if _, ok, err := opOf(c); err == nil && ok {
			switch c.op {
			case "add-server", "edit-server", "delete-server":
				if c.real == "" {
					t.Fatalf("%q: a server rule without a server", line)
				}
			case "add-blklst", "del-blklst", "add-whtlst", "del-whtlst":
				if c.prefix == "" || c.service == "" {
					t.Fatalf("%q: a list rule without a prefix or service", line)
				}
			}
		}
	})
}

// FuzzServices reads any services(5) text: nothing panics, and every entry
// is a port that fits 16 bits, a protocol and a name without spaces, as
// getservbyport would give them.
func FuzzServices(f *testing.F) {
	for _, s := range []string{
		"http\t\t80/tcp\t\twww # WorldWideWeb HTTP\n",
		"domain 53/udp\ndomain 53/tcp\n",
		"# only a comment\n\n",
		"bad 70000/tcp\nnoproto 99\nslash 99/\n",
		"x 080/TCP alias\n",
		"a -1/tcp\n",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, text string) {
		for key, name := range parseServices(strings.NewReader(text)) {
			port, proto, ok := strings.Cut(key, "/")
			p, err := strconv.ParseUint(port, 10, 16)
			if !ok || err != nil || strconv.FormatUint(p, 10) != port || proto == "" || strings.ContainsAny(proto, " \t/") {
				t.Fatalf("%q: entry %q", text, key)
			}
			if name == "" || strings.ContainsAny(name, " \t\n#") {
				t.Fatalf("%q: %s named %q", text, key, name)
			}
		}
	})
}
