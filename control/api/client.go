package api

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"
)

// DefaultSocket is where tapvs listens unless configured otherwise.
const DefaultSocket = "/run/tapvs/tapvs.sock"

// Client talks to a tapvs control socket.
type Client struct {
	hc     *http.Client
	stream *http.Client // no overall timeout: the server bounds a capture
	// OnNote, if set, is given each note of a change's answer (Result):
	// how a reload of the configuration file will treat it.
	OnNote func(string)
}

// Dial returns a client for the socket at path.
func Dial(path string) *Client {
	tr := &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, "unix", path)
	}}
	return &Client{hc: &http.Client{Timeout: 30 * time.Second, Transport: tr}, stream: &http.Client{Transport: tr}}
}

// do sends a request; out, if not nil, receives the JSON answer. An API
// error comes back as *Error.
func (c *Client) do(method, path string, in, out any) error {
	var body io.Reader
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return err
		}
		body = bytes.NewReader(b)
	}
	req, err := http.NewRequest(method, "http://tapvs"+path, body)
	if err != nil {
		return err
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode >= 300 {
		var e Error
		if json.NewDecoder(resp.Body).Decode(&e) != nil || e.Message == "" {
			return &Error{Code: CodeInternal, Message: resp.Status}
		}
		return &e
	}
	if out != nil {
		return json.NewDecoder(resp.Body).Decode(out)
	}
	if resp.StatusCode == http.StatusOK && c.OnNote != nil {
		var res Result
		if json.NewDecoder(resp.Body).Decode(&res) == nil {
			for _, n := range res.Notes {
				c.OnNote(n)
			}
		}
	}
	return nil
}

func esc(s string) string { return url.PathEscape(s) }

func (k ServiceKey) escPath() string {
	if k.FWMark != 0 {
		return "/v1/services/fwm/" + strconv.FormatUint(uint64(k.FWMark), 10)
	}
	return "/v1/services/" + esc(k.Protocol) + "/" + esc(k.Addr)
}

func (c *Client) Info() (i Info, err error)          { return i, c.do("GET", "/v1/info", nil, &i) }
func (c *Client) Services() (s []Service, err error) { return s, c.do("GET", "/v1/services", nil, &s) }
func (c *Client) Conns() (cs []Conn, err error)      { return cs, c.do("GET", "/v1/conns", nil, &cs) }
func (c *Client) Timeouts() (t Timeouts, err error)  { return t, c.do("GET", "/v1/timeouts", nil, &t) }
func (c *Client) SetTimeouts(t Timeouts) error       { return c.do("PUT", "/v1/timeouts", t, nil) }
func (c *Client) Zero() error                        { return c.do("POST", "/v1/zero", nil, nil) }
func (c *Client) ZeroService(k ServiceKey) error     { return c.do("POST", k.escPath()+"/zero", nil, nil) }
func (c *Client) Clear() error                       { return c.do("DELETE", "/v1/services", nil, nil) }
func (c *Client) AddService(s ServiceSpec) error     { return c.do("POST", "/v1/services", s, nil) }
func (c *Client) EditService(s ServiceSpec) error    { return c.do("PUT", s.escPath(), s, nil) }
func (c *Client) DeleteService(k ServiceKey) error   { return c.do("DELETE", k.escPath(), nil, nil) }
func (c *Client) AddDest(k ServiceKey, d DestSpec) error {
	return c.do("POST", k.escPath()+"/dests", d, nil)
}
func (c *Client) EditDest(k ServiceKey, d DestSpec) error {
	return c.do("PUT", k.escPath()+"/dests/"+esc(d.Addr), d, nil)
}
func (c *Client) DeleteDest(k ServiceKey, addr string) error {
	return c.do("DELETE", k.escPath()+"/dests/"+esc(addr), nil, nil)
}
func (c *Client) AddLocalAddr(k ServiceKey, addr string) error {
	return c.do("POST", k.escPath()+"/laddrs", LocalAddr{Addr: addr}, nil)
}
func (c *Client) DeleteLocalAddr(k ServiceKey, addr string) error {
	return c.do("DELETE", k.escPath()+"/laddrs/"+esc(addr), nil, nil)
}

// ServicesAsAdded lists the services in the order they were added, as a
// kernel's table lists them (ipvsadm --nosort); Services sorts them.
func (c *Client) ServicesAsAdded() (s []Service, err error) {
	return s, c.do("GET", "/v1/services?order=added", nil, &s)
}

// Reload reloads the configuration file, as SIGHUP does, and says what it
// did.
func (c *Client) Reload() (r Reload, err error) { return r, c.do("POST", "/v1/reload", nil, &r) }

// BGP reads the BGP speaker's peers and routes.
func (c *Client) BGP() (b BGP, err error) { return b, c.do("GET", "/v1/bgp", nil, &b) }

// Drain withdraws the instance's VIPs from its BGP peers, keeping its
// connections; DrainStatus reads how many are left; Undrain announces the
// VIPs again.
func (c *Client) Drain() (d Drain, err error)       { return d, c.do("POST", "/v1/drain", nil, &d) }
func (c *Client) DrainStatus() (d Drain, err error) { return d, c.do("GET", "/v1/drain", nil, &d) }
func (c *Client) Undrain() (d Drain, err error)     { return d, c.do("DELETE", "/v1/drain", nil, &d) }

// HealthCheck reports a service's health check.
func (c *Client) HealthCheck(k ServiceKey) (h Health, err error) {
	return h, c.do("GET", k.escPath()+"/health", nil, &h)
}

// SetHealthCheck replaces a service's health check until the next reload.
func (c *Client) SetHealthCheck(k ServiceKey, hc HealthCheck) error {
	return c.do("PUT", k.escPath()+"/health", hc, nil)
}

// ClearHealthCheck stops a service's health check until the next reload.
func (c *Client) ClearHealthCheck(k ServiceKey) error {
	return c.do("DELETE", k.escPath()+"/health", nil, nil)
}

// Batch applies ops as one: all of them or, if one is refused, none.
func (c *Client) Batch(ops []Op) error { return c.do("POST", "/v1/batch", Batch{Ops: ops}, nil) }

// Get fetches a raw path (the capture endpoint streams a pcap).
func (c *Client) Get(path string) (*http.Response, error) {
	resp, err := c.stream.Get("http://tapvs" + path)
	if err == nil && resp.StatusCode >= 300 {
		defer resp.Body.Close()
		var e Error
		if json.NewDecoder(resp.Body).Decode(&e) == nil && e.Message != "" {
			return nil, &e
		}
		return nil, fmt.Errorf("%s", resp.Status)
	}
	return resp, err
}

// Faults lists the faults in force with their counters.
func (c *Client) Faults() (fs []FaultView, err error) { return fs, c.do("GET", "/v1/faults", nil, &fs) }

// SetFaults replaces the faults in force until the next reload (none:
// fs empty).
func (c *Client) SetFaults(fs []Fault) error {
	if fs == nil {
		fs = []Fault{}
	}
	return c.do("PUT", "/v1/faults", fs, nil)
}

// AddFault sets f until the next reload, in place of a fault on its
// target.
func (c *Client) AddFault(f Fault) error { return c.do("POST", "/v1/faults", f, nil) }

// RemoveFault clears the fault on target's target (Service, Server or
// Client).
func (c *Client) RemoveFault(target Fault) error {
	q := url.Values{}
	for k, v := range map[string]string{"service": target.Service, "server": target.Server, "client": target.Client} {
		if v != "" {
			q.Set(k, v)
		}
	}
	if len(q) == 0 {
		return errors.New("a fault's target: its service, server or client")
	}
	return c.do("DELETE", "/v1/faults?"+q.Encode(), nil, nil)
}

// EventQuery selects the events of Events: Kinds (kinds or groups: conn,
// server, quorum, reload), one service (Protocol and Addr, as /v1/capture
// names it), and the subscription's buffer (0: the server's default).
type EventQuery struct {
	Kinds          []string
	Protocol, Addr string
	Buffer         int
}

// Events streams the events q selects, from the moment it returns, until
// ctx ends or the server goes; it calls yield with each, and stops when
// yield returns false. The error is why the stream ended (nil: yield
// stopped it).
func (c *Client) Events(ctx context.Context, q EventQuery, started func(), yield func(Event) bool) error {
	v := url.Values{}
	if len(q.Kinds) > 0 {
		v.Set("kind", strings.Join(q.Kinds, ","))
	}
	if q.Protocol != "" || q.Addr != "" {
		v.Set("proto", q.Protocol)
		v.Set("addr", q.Addr)
	}
	if q.Buffer > 0 {
		v.Set("buffer", strconv.Itoa(q.Buffer))
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://tapvs/v1/events?"+v.Encode(), nil)
	if err != nil {
		return err
	}
	resp, err := c.stream.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode >= 300 {
		var e Error
		if json.NewDecoder(resp.Body).Decode(&e) == nil && e.Message != "" {
			return &e
		}
		return fmt.Errorf("%s", resp.Status)
	}
	if started != nil {
		started()
	}
	dec := json.NewDecoder(resp.Body)
	for {
		var e Event
		if err := dec.Decode(&e); err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			return fmt.Errorf("events: %w", err)
		}
		if !yield(e) {
			return nil
		}
	}
}
