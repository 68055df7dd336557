package control

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/netip"
	"strconv"
	"strings"

	"github.com/tapvs/tapvs/control/api"
	"github.com/tapvs/tapvs/events"
)

// SetEvents has the API stream bus's events (GET /v1/events).
func (m *Manager) SetEvents(bus *events.Bus) { m.events.Store(bus) }

// EventFilter reads GET /v1/events's query: kind (comma-separated kinds
// or groups: conn, server, quorum, reload), proto and addr (the service,
// as /v1/capture names it: fwm and the mark for a match service), buffer
// (the subscription's, in events). A refusal names the parameter.
func EventFilter(q map[string][]string) (events.Filter, int, error) {
	get := func(k string) string {
		if v := q[k]; len(v) > 0 {
			return v[0]
		}
		return ""
	}
	var f events.Filter
	if v := get("kind"); v != "" {
		for _, name := range strings.Split(v, ",") {
			ks, err := events.ParseKind(strings.TrimSpace(name))
			if err != nil {
				return f, 0, fmt.Errorf("kind: %w", err)
			}
			f.Kinds = append(f.Kinds, ks...)
		}
	}
	if p, a := get("proto"), get("addr"); p != "" || a != "" {
		k, err := parseKey(api.ServiceKey{Protocol: p, Addr: a})
		if err != nil {
			return f, 0, fmt.Errorf("proto, addr: %w", err)
		}
		f.Service = k.String()
	}
	buffer := 0
	if v := get("buffer"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > events.MaxBuffer {
			return f, 0, fmt.Errorf("buffer: %q is not a number from 1 to %d", v, events.MaxBuffer)
		}
		buffer = n
	}
	return f, buffer, nil
}

// APIEvent is e as the API sends it.
func APIEvent(e events.Event) api.Event {
	ap := func(a netip.AddrPort) string {
		if a.IsValid() {
			return a.String()
		}
		return ""
	}
	return api.Event{Kind: string(e.Kind), Time: e.Time, Service: e.Service, Server: ap(e.Server), Client: ap(e.Client),
		VIP: ap(e.VIP), Local: ap(e.Local), Protocol: e.Protocol, State: e.State, Reason: e.Reason, Count: e.Count}
}

// events streams the bus's events as newline-delimited JSON until the
// client goes: GET /v1/events?kind=server_down,conn&proto=tcp&addr=VIP:port.
// The answer's header is sent once the subscription is made: an event
// after it is in the stream. A client that reads too slowly loses events,
// told by a "lost" event with their count; it never slows tapvs.
func (s *Server) events(w http.ResponseWriter, r *http.Request) {
	bus := s.m.events.Load()
	if bus == nil {
		fail(w, &api.Error{Code: api.CodeInvalid, Message: "events: this tapvs publishes none"}, http.StatusNotFound)
		return
	}
	f, buffer, err := EventFilter(r.URL.Query())
	if err != nil {
		fail(w, &api.Error{Code: api.CodeInvalid, Message: err.Error()}, http.StatusBadRequest)
		return
	}
	sub := bus.Subscribe(f, buffer)
	defer sub.Close()
	w.Header().Set("Content-Type", "application/x-ndjson")
	w.WriteHeader(http.StatusOK)
	flusher, _ := w.(http.Flusher)
	if flusher != nil {
		flusher.Flush()
	}
	enc := json.NewEncoder(w)
	enc.SetEscapeHTML(false)
	for {
		e, err := sub.Next(r.Context())
		if err != nil {
			return
		}
		if enc.Encode(APIEvent(e)) != nil {
			return
		}
		// Whatever else is waiting goes in the same write.
		for more := true; more; {
			select {
			case e := <-sub.C():
				if enc.Encode(APIEvent(e)) != nil {
					return
				}
			default:
				more = false
			}
		}
		if flusher != nil {
			flusher.Flush()
		}
	}
}
