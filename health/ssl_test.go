package health

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/pem"
	"io"
	"log"
	"math/big"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tapvs/tapvs/nat"
)

// selfSigned is a certificate for www.example.test and the given
// addresses, signed by itself, and its PEM.
func selfSigned(t *testing.T, addrs ...netip.Addr) (tls.Certificate, []byte) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "www.example.test"},
		DNSNames: []string{"www.example.test"}, NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true, IsCA: true,
	}
	for _, a := range addrs {
		tmpl.IPAddresses = append(tmpl.IPAddresses, a.AsSlice())
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key, Leaf: leaf}, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
}

// The ssl check (SSL_GET) through the stack: status and body digest as
// http's; the certificate is not verified unless asked, then against the
// roots given, for the server name; the SNI is server_name, else the
// virtualhost's host, else none; virtualhost is the Host header of http
// and ssl; a server that never answers the handshake fails within the
// timeout (the handshake is bounded by it: unbounded, the test hangs).
func TestCheckSSL(t *testing.T) {
	st := loopStack(t, lip, rs1.Addr())
	bal, svc := testBalancer(t, rs1)
	c := New(bal, st, nic, quiet)
	cert, pool := selfSigned(t, rs1.Addr())
	_, otherPool := selfSigned(t)

	body := "healthy\n"
	sum := sha256.Sum256([]byte(body))
	var mu sync.Mutex
	var snis, hosts []string
	h := func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		hosts = append(hosts, r.Host)
		mu.Unlock()
		switch r.URL.Path {
		case "/ok":
			io.WriteString(w, body)
		default:
			http.NotFound(w, r)
		}
	}
	tl := listen(t, st, netip.AddrPortFrom(rs1.Addr(), 443))
	srv := &http.Server{Handler: http.HandlerFunc(h), ReadHeaderTimeout: time.Second, ErrorLog: log.New(io.Discard, "", 0),
		TLSConfig: &tls.Config{Certificates: []tls.Certificate{cert}, GetConfigForClient: func(hi *tls.ClientHelloInfo) (*tls.Config, error) {
			mu.Lock()
			snis = append(snis, hi.ServerName)
			mu.Unlock()
			return nil, nil
		}}}
	done := make(chan struct{})
	go func() { defer close(done); srv.ServeTLS(tl, "", "") }()
	t.Cleanup(func() { srv.Close(); <-done })
	serveHTTP(t, st, netip.AddrPortFrom(rs1.Addr(), 8080), h)
	// A server that accepts and never says a word.
	mute := listen(t, st, netip.AddrPortFrom(rs1.Addr(), 8443))
	defer mute.Close()
	var held []net.Conn
	var hmu sync.Mutex
	go func() {
		for {
			conn, err := mute.Accept()
			if err != nil {
				return
			}
			hmu.Lock()
			held = append(held, conn)
			hmu.Unlock()
		}
	}()
	defer func() {
		hmu.Lock()
		defer hmu.Unlock()
		for _, c := range held {
			c.Close()
		}
	}()

	ssl := func(s Spec) Spec {
		s.Type, s.Port = "ssl", 443
		if s.Path == "" {
			s.Path = "/ok"
		}
		return s
	}
	cases := []struct {
		name      string
		spec      Spec
		want      string // "" passes
		sni, host string // what the server saw ("-": not asked)
	}{
		{"ssl 200, not verified", ssl(Spec{}), "", "", "10.20.1.2:443"},
		{"ssl body sha256", ssl(Spec{BodySHA256: hex.EncodeToString(sum[:])}), "", "-", "-"},
		{"ssl body differs", ssl(Spec{BodySHA256: strings.Repeat("00", 32)}), "ssl body sha256 " + hex.EncodeToString(sum[:]), "-", "-"},
		{"ssl 404", ssl(Spec{Path: "/missing"}), "ssl status 404, want 200", "-", "-"},
		{"ssl expected 404", ssl(Spec{Path: "/missing", Status: 404}), "", "-", "-"},
		{"ssl server_name", ssl(Spec{ServerName: "www.example.test"}), "", "www.example.test", "10.20.1.2:443"},
		{"ssl virtualhost", ssl(Spec{VirtualHost: "www.example.test:8443"}), "", "www.example.test", "www.example.test:8443"},
		{"ssl server_name over virtualhost", ssl(Spec{VirtualHost: "a.example.test", ServerName: "b.example.test"}), "", "b.example.test", "a.example.test"},
		{"ssl verified by its CA and name", ssl(Spec{Verify: true, CAPEM: pool, ServerName: "www.example.test"}), "", "-", "-"},
		{"ssl verified by its CA and address", ssl(Spec{Verify: true, CAPEM: pool}), "", "-", "-"},
		{"ssl verified, wrong name", ssl(Spec{Verify: true, CAPEM: pool, ServerName: "other.example.test"}), "tls handshake", "-", "-"},
		{"ssl verified, another CA", ssl(Spec{Verify: true, CAPEM: otherPool, ServerName: "www.example.test"}), "tls handshake", "-", "-"},
		{"ssl to plain http", Spec{Type: "ssl", Port: 8080, Path: "/ok"}, "tls handshake", "-", "-"},
		{"ssl nothing listening", Spec{Type: "ssl", Port: 81, Path: "/"}, "ssl: ", "-", "-"},
		{"ssl handshake unanswered", Spec{Type: "ssl", Port: 8443, Path: "/"}, "context deadline exceeded", "-", "-"},
		{"http virtualhost", Spec{Type: "http", Port: 8080, Path: "/ok", VirtualHost: "www.example.test"}, "", "-", "www.example.test"},
		{"http without virtualhost", Spec{Type: "http", Port: 8080, Path: "/ok"}, "", "-", "10.20.1.2:8080"},
	}
	for _, tc := range cases {
		mu.Lock()
		snis, hosts = nil, nil
		mu.Unlock()
		tc.spec.Timeout = 2 * time.Second
		if tc.name == "ssl handshake unanswered" {
			tc.spec.Timeout = 200 * time.Millisecond
		}
		err := c.check(svc, Target{Proto: nat.TCP, VIP: vip, RS: rs1, Spec: tc.spec, Weight: 5})
		switch {
		case tc.want == "" && err != nil:
			t.Errorf("%s: %v, want a pass", tc.name, err)
		case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
			t.Errorf("%s: %v, want an error saying %q", tc.name, err, tc.want)
		}
		mu.Lock()
		if tc.sni != "-" && (len(snis) != 1 || snis[0] != tc.sni) {
			t.Errorf("%s: SNI %q, want [%q]", tc.name, snis, tc.sni)
		}
		if tc.host != "-" && (len(hosts) != 1 || hosts[0] != tc.host) {
			t.Errorf("%s: Host %q, want [%q]", tc.name, hosts, tc.host)
		}
		mu.Unlock()
	}
}
