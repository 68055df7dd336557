package e2e

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/tapvs/tapvs/config"
)

// The IPv6-only pod: deploy/pod.yaml with its ConfigMap's interfaces and
// service made IPv6 (the kernel ends have peer_address6 and no
// peer_address), the pod's IPv6 forwarding on, and the app asking the
// IPv6 VIP; run on a dual-stack podman network of the test's own.
const (
	pod6Name    = "tapvs-sidecar6"
	pod6Net     = "tapvs-e2e6"
	pod6Subnet  = "fd00:90::/64"
	pod6Subnet4 = "10.90.0.0/24"
	pod6VIP     = "fd00:25:254::100"
)

var pod6RS = [2]string{"fd00:90::11", "fd00:90::12"}

var pod6Config = `interfaces:
  offload: true
  client:
    name: tap-c
    mtu: 1500
    address: 172.25.254.254/24
    address6: fd00:25:254::fe/64
    peer_address6: fd00:25:254::1/64
    routes:
      - {dst: '::/0', via: 'fd00:25:254::1'}
    publish:
      - {protocol: tcp, port: 80, vip: '` + pod6VIP + `'}
  server:
    name: tap-s
    mtu: 1500
    address: 172.25.84.4/24
    address6: fd00:25:84::4/64
    peer_address6: fd00:25:84::1/64
    masquerade: true
    routes:
      - {dst: '::/0', via: 'fd00:25:84::1'}
services:
  - name: web6
    vip: '` + pod6VIP + `'
    port: 80
    scheduler: rr
    local_addresses: ['fd00:25:84::10', 'fd00:25:84::11']
    health_check: {type: tcp, interval: 2s, timeout: 1s, rise: 1, fall: 2}
    real_servers:
      - {address: '` + pod6RS[0] + `', port: 80}
      - {address: '` + pod6RS[1] + `', port: 80}
control:
  socket: /run/tapvs/tapvs.sock
metrics:
  listen: 127.0.0.1:9477
log:
  level: info
`

// pod6Manifest writes deploy/pod.yaml made IPv6 (see above) to dir and
// returns its path.
func pod6Manifest(t *testing.T, dir string) string {
	t.Helper()
	if _, err := config.Parse(pod6Config); err != nil {
		t.Fatalf("the IPv6 pod's configuration: %v", err)
	}
	b, err := os.ReadFile(podYAML)
	if err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	enc := yaml.NewEncoder(&out)
	dec := yaml.NewDecoder(bytes.NewReader(b))
	for range 16 { // bounded: the manifest has two documents
		var doc map[string]any
		if err := dec.Decode(&doc); errors.Is(err, io.EOF) {
			break
		} else if err != nil {
			t.Fatal(err)
		}
		meta, _ := doc["metadata"].(map[string]any)
		switch doc["kind"] {
		case "ConfigMap":
			meta["name"] = "tapvs-config6"
			doc["data"] = map[string]any{"config.yaml": pod6Config}
		case "Pod":
			meta["name"] = pod6Name
			spec := doc["spec"].(map[string]any)
			sc := spec["securityContext"].(map[string]any)
			sc["sysctls"] = append(sc["sysctls"].([]any), map[string]any{"name": "net.ipv6.conf.all.forwarding", "value": "1"})
			for _, c := range spec["containers"].([]any) {
				if c := c.(map[string]any); c["name"] == "app" {
					c["command"] = []any{"/bin/sh", "-c", "until ip -6 route get " + pod6VIP + " | grep -q tap-c; do sleep 0.1; done; " +
						"while :; do timeout 5 wget -q -O - http://[" + pod6VIP + "]/ || echo \"request failed\"; sleep 1; done"}
				}
			}
			for _, v := range spec["volumes"].([]any) {
				if cm, ok := v.(map[string]any)["configMap"].(map[string]any); ok {
					cm["name"] = "tapvs-config6"
				}
			}
		}
		if err := enc.Encode(doc); err != nil {
			t.Fatal(err)
		}
	}
	enc.Close()
	p := filepath.Join(dir, "pod6.yaml")
	if err := os.WriteFile(p, out.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out.String(), "tapvs-config6") || !strings.Contains(out.String(), "net.ipv6.conf.all.forwarding") {
		t.Fatalf("the IPv6 manifest lacks its changes:\n%s", out.String())
	}
	return p
}

// TestSidecarPodIPv6 is TestSidecarPod over IPv6 only: the app's requests
// to the IPv6 VIP are balanced over both real servers (outbound) and each
// real server logs the pod's IPv6 address as the client (masquerade, ip6
// table), and a client container outside the pod reaches the service at
// the pod's IPv6 address (publish, ip6 table).
func TestSidecarPodIPv6(t *testing.T) {
	need(t)
	needIPv6(t)
	busybox := needPodman(t)
	dir := t.TempDir()
	pm, must := podmanIn(t, dir)
	manifest := pod6Manifest(t, dir)
	rsName := func(i int) string { return fmt.Sprintf("tapvs-e2e6-rs%d", i+1) }
	teardown := func() {
		pm(time.Minute, "kube", "down", manifest)
		for _, c := range []string{rsName(0), rsName(1), "tapvs-e2e6-client"} {
			pm(time.Minute, "rm", "-f", "-t", "0", c)
		}
		pm(time.Minute, "network", "rm", "-f", pod6Net)
	}
	teardown() // what a killed run left
	t.Cleanup(func() {
		if t.Failed() {
			for _, c := range []string{pod6Name + "-tapvs", pod6Name + "-app", rsName(0), rsName(1)} {
				out, _ := pm(time.Minute, "logs", c)
				t.Logf("podman logs %s:\n%s", c, tail(out, 30))
			}
		}
		teardown()
		pm(time.Minute, "image", "prune", "-f", "--filter", "label="+e2eLabel)
	})
	buildImages(t, dir, busybox, must)
	must(time.Minute, "network", "create", "--ipv6", "--subnet", pod6Subnet4, "--subnet", pod6Subnet, pod6Net)
	for i, a := range pod6RS {
		must(time.Minute, "run", "-d", "--name", rsName(i), "--network", pod6Net, "--ip6", a,
			"localhost/busybox:latest", "-c",
			fmt.Sprintf("mkdir -p /www && echo rs%d > /www/index.html && exec httpd -f -v -p 80 -h /www", i+1))
	}
	must(2*time.Minute, "kube", "play", "--network", pod6Net, manifest)
	if !eventually(30*time.Second, func() bool {
		_, err := pm(10*time.Second, "exec", pod6Name+"-tapvs", "/usr/bin/tapvs", "healthz")
		return err == nil
	}) {
		t.Fatal("tapvs healthz never succeeded in the pod")
	}
	// podman 4.3's kube play does not apply the pod's sysctls (none is in
	// its containers' OCI configuration): IPv4 forwards in the pod only
	// because a new namespace inherits the host's net.ipv4 settings, while
	// IPv6's start at the kernel's default, off. tapvs says so; the test
	// then does what a kubelet allowing the sysctl does, from outside.
	if !eventually(10*time.Second, func() bool {
		out, _ := pm(10*time.Second, "logs", pod6Name+"-tapvs")
		return strings.Contains(out, "net.ipv6.conf.all.forwarding is 0 in the TAP's namespace")
	}) {
		t.Fatal("tapvs in the pod did not say that IPv6 forwarding is off")
	}
	pid := strings.TrimSpace(must(time.Minute, "inspect", "--format", "{{.State.Pid}}", pod6Name+"-tapvs"))
	if out, err := exec.Command("nsenter", "-t", pid, "-n", "sysctl", "-qw", "net.ipv6.conf.all.forwarding=1").CombinedOutput(); err != nil {
		t.Fatalf("IPv6 forwarding in the pod: %v %s", err, out)
	}

	// Outbound: the app's requests to the IPv6 VIP reach both servers.
	var answers map[string]int
	if !eventually(45*time.Second, func() bool {
		out, err := pm(10*time.Second, "logs", pod6Name+"-app")
		if err != nil {
			return false
		}
		answers = map[string]int{}
		for _, l := range strings.Split(out, "\n") {
			if l = strings.TrimSpace(l); l != "" {
				answers[l]++
			}
		}
		return answers["rs1"] >= 2 && answers["rs2"] >= 2
	}) || len(answers) != 2 {
		t.Fatalf("the app's requests to [%s]:80: %v, want answers from rs1 and rs2 only", pod6VIP, answers)
	}
	t.Logf("app's answers through [%s]:80: %v", pod6VIP, answers)

	// The pod's IPv6 address: the one the real servers must see.
	infra := strings.TrimSpace(must(time.Minute, "pod", "inspect", "--format", "{{.InfraContainerID}}", pod6Name))
	podIP6 := strings.TrimSpace(must(time.Minute, "inspect", "--format", "{{range .NetworkSettings.Networks}}{{.GlobalIPv6Address}}{{end}}", infra))
	if !strings.HasPrefix(podIP6, "fd00:90::") {
		t.Fatalf("the pod's IPv6 address: %q", podIP6)
	}
	for i := range pod6RS {
		out := must(time.Minute, "logs", rsName(i))
		if !strings.Contains(out, "response:200") || !strings.Contains(out, podIP6) || strings.Contains(out, "fd00:25:84::") {
			t.Fatalf("%s's log: want answered requests from the pod's %s (masqueraded), never a LIP:\n%s", rsName(i), podIP6, tail(out, 10))
		}
	}

	// Inbound: a client outside the pod, at the pod's IPv6 address.
	out := must(time.Minute, "run", "--rm", "--name", "tapvs-e2e6-client", "--network", pod6Net, "localhost/busybox:latest", "-c",
		fmt.Sprintf("for i in 1 2 3 4; do timeout 5 wget -q -O - http://[%s]:80/ || echo failed; done", podIP6))
	inbound := map[string]int{}
	for _, l := range strings.Fields(out) {
		inbound[l]++
	}
	if inbound["rs1"]+inbound["rs2"] != 4 || inbound["rs1"] == 0 || inbound["rs2"] == 0 {
		t.Fatalf("4 requests from outside the pod to [%s]:80: %v, want all answered, by both servers\n%s", podIP6, inbound, out)
	}
	t.Logf("inbound, from a container outside the pod to the pod's [%s]:80: %v", podIP6, inbound)
}
