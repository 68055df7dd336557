package e2e

import (
	"bytes"
	"context"
	"debug/elf"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/tapvs/tapvs/config"
)

// The manifest README.md tells users to apply, and the names it gives.
const (
	podYAML       = "../deploy/pod.yaml"
	containerfile = "../deploy/Containerfile"
	podName       = "tapvs-sidecar"
	tapvsCtr      = podName + "-tapvs"
	appCtr        = podName + "-app"
	e2eLabel      = "org.tapvs.e2e=sidecar" // on the images the test builds
)

// TestSidecarPod builds the image from the repository with podman (no
// registry: FROM scratch and local binaries), starts two real servers as
// containers outside the pod, runs deploy/pod.yaml as it is with `podman
// kube play`, and checks that the application container's requests to the
// VIP are balanced over both (outbound), that a client outside the pod is
// balanced over both at the pod's address (inbound), and that tapvs holds
// CAP_NET_ADMIN alone.
func TestSidecarPod(t *testing.T) {
	need(t)
	busybox := needPodman(t)
	start := time.Now()
	dir := t.TempDir()

	// The recipe's configuration is the ConfigMap's: it must load, and its
	// real servers are the ones started here.
	cfg := podConfig(t, dir)
	if len(cfg.Services) != 1 || len(cfg.Services[0].RealServers) != 2 {
		t.Fatalf("deploy/pod.yaml: want one service with two real servers, have %+v", cfg.Services)
	}
	svc := cfg.Services[0]

	pm, must := podmanIn(t, dir)
	rsName := func(i int) string { return fmt.Sprintf("tapvs-e2e-rs%d", i+1) }
	teardown := func() {
		pm(time.Minute, "kube", "down", podYAML)
		// One at a time: podman rm of several stops at one that is gone.
		for _, c := range []string{rsName(0), rsName(1), "tapvs-e2e-client"} {
			pm(time.Minute, "rm", "-f", "-t", "0", c)
		}
	}
	// kube play puts the pod on podman-default-kube-network, made on first
	// use: removed afterwards only if this test made it.
	_, netErr := pm(time.Minute, "network", "exists", "podman-default-kube-network")
	teardown() // what a killed run left
	t.Cleanup(func() {
		if t.Failed() {
			for _, c := range []string{tapvsCtr, appCtr, rsName(0), rsName(1)} {
				out, _ := pm(time.Minute, "logs", c)
				t.Logf("podman logs %s:\n%s", c, tail(out, 30))
			}
		}
		teardown()
		if netErr != nil {
			pm(time.Minute, "network", "rm", "podman-default-kube-network")
		}
		// Each run's build untags the last run's images: remove those.
		pm(time.Minute, "image", "prune", "-f", "--filter", "label="+e2eLabel)
	})

	buildImages(t, dir, busybox, must)
	built := time.Now()

	// The real servers: busybox httpd on podman's default network, outside
	// the pod (kube play puts the pod on a network of its own), each
	// answering with its name and logging every request.
	for i, rs := range svc.RealServers {
		must(time.Minute, "run", "-d", "--name", rsName(i), "--network", "podman", "--ip", rs.Address.String(),
			"localhost/busybox:latest", "-c",
			fmt.Sprintf("mkdir -p /www && echo rs%d > /www/index.html && exec httpd -f -v -p %d -h /www", i+1, rs.Port))
	}

	// The pod, from the manifest as it is.
	must(2*time.Minute, "kube", "play", podYAML)

	// Readiness: the probe's own command, run as kubelet would.
	if !eventually(30*time.Second, func() bool {
		_, err := pm(10*time.Second, "exec", tapvsCtr, "/usr/bin/tapvs", "healthz")
		return err == nil
	}) {
		t.Fatal("tapvs healthz never succeeded in the pod")
	}
	ready := time.Now()

	// The application's requests, one a second: both real servers answer.
	var answers map[string]int
	if !eventually(45*time.Second, func() bool {
		out, err := pm(10*time.Second, "logs", appCtr)
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
	}) {
		t.Fatalf("the app's requests to the VIP did not reach both real servers: %v", answers)
	}
	// Every answer came from a real server: none failed, and none came
	// from elsewhere (the pod's default route, before tapvs's TAP).
	if len(answers) != 2 {
		t.Fatalf("the app's requests to the VIP: %v, want answers from rs1 and rs2 only", answers)
	}
	t.Logf("app's answers through %s:%d: %v", svc.VIP, svc.Port, answers)

	// Each real server logged requests, and none came from the app's own
	// address: they arrive through tapvs (from a LIP, masqueraded).
	for i := range svc.RealServers {
		out := must(time.Minute, "logs", rsName(i))
		if !strings.Contains(out, "response:200") {
			t.Fatalf("%s logged no answered request:\n%s", rsName(i), tail(out, 10))
		}
	}
	// Inbound: a client outside the pod reaches the service at the pod's
	// address (publish), answered by both real servers in turn.
	infra := strings.TrimSpace(must(time.Minute, "pod", "inspect", "--format", "{{.InfraContainerID}}", podName))
	podIP := strings.TrimSpace(must(time.Minute, "inspect", "--format", "{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}", infra))
	out := must(time.Minute, "run", "--rm", "--name", "tapvs-e2e-client", "--network", "podman", "localhost/busybox:latest", "-c",
		fmt.Sprintf("for i in 1 2 3 4; do timeout 5 wget -q -O - http://%s:%d/ || echo failed; done", podIP, svc.Port))
	inbound := map[string]int{}
	for _, l := range strings.Fields(out) {
		inbound[l]++
	}
	// The app's requests share the round robin, so the split need not be 2/2.
	if inbound["rs1"]+inbound["rs2"] != 4 || inbound["rs1"] == 0 || inbound["rs2"] == 0 {
		t.Fatalf("4 requests from outside the pod to %s:%d: %v, want all answered, by both servers\n%s", podIP, svc.Port, inbound, out)
	}
	t.Logf("inbound, from a container outside the pod to the pod's %s:%d: %v", podIP, svc.Port, inbound)

	// tapvs counted the connections to both servers.
	ln := must(time.Minute, "exec", tapvsCtr, "/usr/bin/tapvsadm", "-Ln", "--stats")
	t.Logf("tapvsadm -Ln --stats in the pod:\n%s", ln)
	for _, rs := range svc.RealServers {
		if !strings.Contains(ln, fmt.Sprintf("%s:%d", rs.Address, rs.Port)) {
			t.Fatalf("tapvsadm does not list %s", rs.Address)
		}
	}
	// tapvs holds CAP_NET_ADMIN and nothing else; the app holds nothing.
	if caps := strings.TrimSpace(must(time.Minute, "inspect", "--format", "{{.EffectiveCaps}}", tapvsCtr)); caps != "[CAP_NET_ADMIN]" {
		t.Fatalf("tapvs's capabilities: %s, want [CAP_NET_ADMIN]", caps)
	}
	if caps := strings.TrimSpace(must(time.Minute, "inspect", "--format", "{{.EffectiveCaps}}", appCtr)); caps != "[]" {
		t.Fatalf("the app's capabilities: %s, want none", caps)
	}
	t.Logf("images built in %v, pod ready %v later, both servers answering %v after that",
		built.Sub(start).Round(time.Millisecond), ready.Sub(built).Round(time.Millisecond), time.Since(ready).Round(time.Millisecond))
}

// podmanIn returns podman run with a containers.conf of this test's (in
// dir), bounded by a timeout, and the same failing the test on an error.
func podmanIn(t *testing.T, dir string) (pm func(time.Duration, ...string) (string, error), must func(time.Duration, ...string) string) {
	// A containers.conf for this machine only (README's recipe needs none):
	// crun refuses this kernel's hybrid cgroups, and runc is refused the
	// default rlimits. (The pod's infra image needs no registry: podman 4
	// builds localhost/podman-pause from its own catatonit.)
	conf := filepath.Join(dir, "containers.conf")
	if err := os.WriteFile(conf, []byte(`[containers]
default_ulimits = ["nofile=4096:4096", "nproc=4096:4096"]
[engine]
runtime = "runc"
cgroup_manager = "cgroupfs"
`), 0o644); err != nil {
		t.Fatal(err)
	}
	pm = func(timeout time.Duration, args ...string) (string, error) {
		ctx, cancel := context.WithTimeout(context.Background(), timeout)
		defer cancel()
		cmd := exec.CommandContext(ctx, "podman", args...)
		cmd.Env = append(os.Environ(), "CONTAINERS_CONF="+conf)
		out, err := cmd.CombinedOutput()
		if err != nil {
			err = fmt.Errorf("podman %s: %w\n%s", strings.Join(args, " "), err, out)
		}
		return string(out), err
	}
	must = func(timeout time.Duration, args ...string) string {
		t.Helper()
		out, err := pm(timeout, args...)
		if err != nil {
			t.Fatal(err)
		}
		return out
	}
	return pm, must
}

// buildImages builds the images: tapvs from the repository's
// Containerfile; the application's and real servers' busybox from the
// local static binary.
func buildImages(t *testing.T, dir, busybox string, must func(time.Duration, ...string) string) {
	t.Helper()
	ctxDir := filepath.Join(dir, "ctx")
	build := exec.Command("go", "build", "-trimpath", "-o", filepath.Join(ctxDir, "bin")+"/", "../cmd/tapvs", "../cmd/tapvsadm")
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	must(5*time.Minute, "build", "-q", "--label", e2eLabel, "-t", "localhost/tapvs:latest", "-f", containerfile, ctxDir)
	must(time.Minute, "build", "-q", "--label", e2eLabel, "-t", "localhost/busybox:latest", "-f", writeContext(t, filepath.Join(dir, "busybox"),
		map[string]string{busybox: "bin/busybox"}, []string{"sh", "wget", "httpd", "sleep", "echo", "mkdir", "timeout", "ip", "grep"},
		"FROM scratch\nCOPY bin/ /bin/\nENTRYPOINT [\"/bin/sh\"]\n"), filepath.Join(dir, "busybox"))
}

// needPodman stops the test if podman, runc or a static busybox is missing (in CI: fails), and returns busybox's path.
func needPodman(t *testing.T) string {
	t.Helper()
	var why []string
	for _, p := range []string{"podman", "runc"} {
		if _, err := exec.LookPath(p); err != nil {
			why = append(why, "no "+p)
		}
	}
	busybox, err := exec.LookPath("busybox")
	if err == nil && !static(busybox) {
		err = fmt.Errorf("%s is not static", busybox)
	}
	if err != nil {
		why = append(why, "no static busybox: "+err.Error())
	}
	if len(why) == 0 {
		return busybox
	}
	msg := "the sidecar test needs podman, runc and busybox-static (apt-get install podman buildah runc busybox-static; bash .ci/deps installs them): " + strings.Join(why, ", ")
	if os.Getenv("CI") == "true" {
		t.Fatal(msg)
	}
	t.Skip(msg)
	return ""
}

// static reports whether an ELF file asks for no dynamic loader: only such
// a binary runs in an image FROM scratch.
func static(path string) bool {
	f, err := elf.Open(path)
	if err != nil {
		return false
	}
	defer f.Close()
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP {
			return false
		}
	}
	return true
}

// podConfig loads the configuration in deploy/pod.yaml's ConfigMap.
func podConfig(t *testing.T, dir string) *config.Config {
	t.Helper()
	b, err := os.ReadFile(podYAML)
	if err != nil {
		t.Fatal(err)
	}
	dec := yaml.NewDecoder(bytes.NewReader(b))
	for {
		var doc struct {
			Kind string            `yaml:"kind"`
			Data map[string]string `yaml:"data"`
		}
		if err := dec.Decode(&doc); err != nil {
			t.Fatalf("deploy/pod.yaml: no ConfigMap with config.yaml: %v", err)
		}
		if doc.Kind != "ConfigMap" || doc.Data["config.yaml"] == "" {
			continue
		}
		p := filepath.Join(dir, "config.yaml")
		if err := os.WriteFile(p, []byte(doc.Data["config.yaml"]), 0o644); err != nil {
			t.Fatal(err)
		}
		cfg, err := config.Load(p)
		if err != nil {
			t.Fatalf("deploy/pod.yaml's ConfigMap: %v", err)
		}
		return cfg
	}
}

// writeContext makes a build context in dir: files copied (source to
// path), busybox applets as symlinks in bin/, and a Containerfile, whose
// path it returns.
func writeContext(t *testing.T, dir string, files map[string]string, applets []string, containerfile string) string {
	t.Helper()
	if err := os.MkdirAll(filepath.Join(dir, "bin"), 0o755); err != nil {
		t.Fatal(err)
	}
	for src, dst := range files {
		b, err := os.ReadFile(src)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, dst), b, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	for _, a := range applets {
		if err := os.Symlink("busybox", filepath.Join(dir, "bin", a)); err != nil {
			t.Fatal(err)
		}
	}
	p := filepath.Join(dir, "Containerfile")
	if err := os.WriteFile(p, []byte(containerfile), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// tail is the last n lines of s.
func tail(s string, n int) string {
	l := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(l) > n {
		l = l[len(l)-n:]
	}
	return strings.Join(l, "\n")
}
