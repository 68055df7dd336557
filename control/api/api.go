// Package api is the control API's JSON types and a client for it.
//
// It is what a program that manages a running tapvs needs (tapvsadm is
// one), and nothing more: it imports no part of the data path, so such a
// program does not carry the balancer in it. Addresses and protocols are
// strings here, as they are on the wire; the server (package control)
// parses them into typed keys before anything acts on them.
package api

import "time"

// ServiceKey names a service as ipvsadm does: protocol and VIP:port, or
// a match service's mark alone (ipvsadm -f; protocol and addr empty).
// tapvs sees no kernel marks: a mark names a selector of the
// configuration's marks: (a VIP, a protocol, ports and ranges). In a path
// a match service is fwm/MARK: /v1/services/fwm/1.
type ServiceKey struct {
	Protocol string `json:"protocol"` // "tcp" or "udp"
	Addr     string `json:"addr"`     // VIP:port
	FWMark   uint32 `json:"fwmark,omitempty"`
}

// Match is a match service's selector, as the configuration's marks:
// defines it.
type Match struct {
	VIP      string `json:"vip"` // "172.25.254.100", or a prefix: "172.25.254.96/29"
	Protocol string `json:"protocol"`
	Ports    string `json:"ports"` // "80,443,8000-8099"
}

// ServiceSpec adds or edits a service (ipvsadm -A / -E).
type ServiceSpec struct {
	ServiceKey
	Name      string `json:"name,omitempty"`
	Scheduler string `json:"scheduler,omitempty"` // empty: wlc on add, unchanged on edit
	// SchedFlags are the scheduler's flags as ipvsadm's --sched-flags
	// names them (sh-fallback, sh-port, mh-fallback, mh-port); nil: none on
	// add, on edit unchanged, or none when the scheduler changes.
	SchedFlags *[]string `json:"sched_flags,omitempty"`
	Synproxy   *bool     `json:"synproxy,omitempty"` // nil: off on add, unchanged on edit
	// ClientAddress is how the real servers learn the client's address:
	// "none", "toa", "proxy-v1" or "proxy-v2"; empty: none on add,
	// unchanged on edit.
	ClientAddress string `json:"client_address,omitempty"`
	// TCPTimestamps is what plain TCP connections do with the client's
	// TCP timestamps: "translate" or "remove"; empty: translate on add,
	// unchanged on edit.
	TCPTimestamps string `json:"tcp_timestamps,omitempty"`
	// Persistent (-p) is the persistence timeout in seconds: nil none on
	// add, unchanged on edit; 0 turns persistence off.
	Persistent *uint32 `json:"persistent,omitempty"`
	// PersistenceNetmask (-M) is the client network a persistence
	// template covers: an IPv4 netmask ("255.255.255.0") or a prefix
	// length ("24", IPv6's "64"); empty: the whole address on add,
	// unchanged on edit.
	PersistenceNetmask string `json:"persistence_netmask,omitempty"`
	// EstablishedTimeout (-V), seconds; 0: unchanged.
	EstablishedTimeout uint32 `json:"established_timeout,omitempty"`
	// Limits on new connections; nil, or a nil field: unchanged on edit,
	// none on add.
	Limits *Limits `json:"limits,omitempty"`
}

// Limits are a service's limits on new connections (tapvsadm
// --source-cps, --source-conns, --half-open); 0 is no limit. In a change, a
// nil field is left as it is.
type Limits struct {
	SourceCPS   *uint32 `json:"source_cps,omitempty"`   // new connections per second from one source
	SourceConns *uint32 `json:"source_conns,omitempty"` // concurrent connections from one source
	HalfOpen    *uint32 `json:"half_open,omitempty"`    // TCP handshakes not yet ACKed by the client (services without SYN proxy)
}

// DestSpec adds or edits a real server (ipvsadm -a / -e).
type DestSpec struct {
	Addr   string `json:"addr"`             // RIP:port
	Weight *int   `json:"weight,omitempty"` // nil: 1 on add, unchanged on edit
	// UThreshold and LThreshold are the connection thresholds (ipvsadm -x
	// and -y): at u_threshold connections (active and inactive) the
	// server takes no new one until below l_threshold (0: below 3/4 of
	// u_threshold); u_threshold 0 is no limit. nil: 0 on add, unchanged on
	// edit.
	UThreshold *uint32 `json:"u_threshold,omitempty"`
	LThreshold *uint32 `json:"l_threshold,omitempty"`
	// Forward is the forwarding method; tapvs does FULLNAT only ("fullnat",
	// ipvsadm's -b). Empty means fullnat.
	Forward string `json:"forward,omitempty"`
}

// Op is one control operation as data, an ipvsadm command: a Batch applies
// a list of them as one (tapvsadm -R).
type Op struct {
	// Op is add-service, edit-service, delete-service, clear, add-dest,
	// edit-dest, delete-dest, add-laddr, delete-laddr, set-timeouts,
	// add-deny, delete-deny, add-allow or delete-allow.
	Op        string       `json:"op"`
	Service   *ServiceSpec `json:"service,omitempty"`
	Dest      *DestSpec    `json:"dest,omitempty"`
	LocalAddr string       `json:"laddr,omitempty"`
	Timeouts  *Timeouts    `json:"timeouts,omitempty"`
	// Prefix is the source prefix (or address) of add-deny, delete-deny,
	// add-allow and delete-allow: "10.1.0.0/16", "192.0.2.7".
	Prefix string `json:"prefix,omitempty"`
}

// Batch is a list of operations applied as one (POST /v1/batch).
type Batch struct {
	Ops []Op `json:"ops"`
}

// Service is a service as listed.
type Service struct {
	ServiceKey
	Match     *Match `json:"match,omitempty"` // a match service's selector (FWMark set)
	Name      string `json:"name"`
	Scheduler string `json:"scheduler"`
	// SchedFlags are the scheduler's flags (sh-port...), as ipvsadm prints them.
	SchedFlags []string `json:"sched_flags,omitempty"`
	Synproxy   bool     `json:"synproxy"`
	// ClientAddress: "none", "toa", "proxy-v1" or "proxy-v2".
	ClientAddress string `json:"client_address"`
	// TCPTimestamps: "translate" or "remove" ("translate" for UDP).
	TCPTimestamps string `json:"tcp_timestamps"`
	// Persistent is the persistence timeout in seconds, 0 for none;
	// PersistenceNetmask its netmask as ipvsadm prints it (IPv4 dotted,
	// IPv6 a prefix length), empty for the whole address.
	Persistent         uint32       `json:"persistent,omitempty"`
	PersistenceNetmask string       `json:"persistence_netmask,omitempty"`
	Timeouts           Timeouts     `json:"timeouts"`
	Dests              []Dest       `json:"dests"`
	LocalAddrs         []LocalAddr  `json:"local_addrs"`
	Stats              Traffic      `json:"stats"`
	Rate               Rate         `json:"rate"`
	Health             []HealthView `json:"health,omitempty"`
	// Allow and Deny are the service's source prefixes: when Allow is not
	// empty only its sources may open connections; Deny's never may.
	Allow  []string   `json:"allow,omitempty"`
	Deny   []string   `json:"deny,omitempty"`
	Limits LimitsView `json:"limits"`
}

// LimitsView is a service's limits as listed; 0 is no limit.
type LimitsView struct {
	SourceCPS   uint32 `json:"source_cps"`
	SourceConns uint32 `json:"source_conns"`
	HalfOpen    uint32 `json:"half_open"`
}

// Dest is a real server as listed.
type Dest struct {
	Addr       string `json:"addr"`
	Forward    string `json:"forward"`
	Weight     int    `json:"weight"`
	ActiveConn int64  `json:"active_conns"`
	InActConn  int64  `json:"inactive_conns"`
	// PersistConn is how many persistence templates send clients here
	// (ipvsadm --persistent-conn).
	PersistConn int64   `json:"persist_conns"`
	Stats       Traffic `json:"stats"`
	Rate        Rate    `json:"rate"`
	// UThreshold and LThreshold are the connection thresholds (0: none);
	// Overloaded is set while the server is at its upper threshold and not
	// yet below its lower one: no new connection goes to it.
	UThreshold uint32 `json:"u_threshold"`
	LThreshold uint32 `json:"l_threshold"`
	Overloaded bool   `json:"overloaded"`
}

// Traffic is what crossed tapvs for a server or a service (ipvsadm
// --stats): In is client to server, Out server to client; bytes are IP
// bytes. The JSON names are capitalised because they were on the wire so
// before the API had types of its own; clients read them.
type Traffic struct {
	Conns    uint64 `json:"Conns"`
	InPkts   uint64 `json:"InPkts"`
	OutPkts  uint64 `json:"OutPkts"`
	InBytes  uint64 `json:"InBytes"`
	OutBytes uint64 `json:"OutBytes"`
}

// Rate is traffic per second over the last estimator interval (ipvsadm
// --rate). Its JSON names are capitalised for the reason Traffic's are.
type Rate struct {
	CPS    float64 `json:"CPS"`
	InPPS  float64 `json:"InPPS"`
	OutPPS float64 `json:"OutPPS"`
	InBPS  float64 `json:"InBPS"`
	OutBPS float64 `json:"OutBPS"`
}

// LocalAddr is a LIP as listed (ipvsadm -G); POST .../laddrs takes its Addr.
type LocalAddr struct {
	Addr      string `json:"addr"`
	Conns     int64  `json:"conns"`
	Conflicts uint64 `json:"conflicts"`
	Exhausted uint64 `json:"exhausted"`
}

// HealthView is a real server's health as a checker sees it.
type HealthView struct {
	Dest    string `json:"dest"`
	Healthy bool   `json:"healthy"`
	Reason  string `json:"reason,omitempty"`
}

// Timeouts in seconds, as ipvsadm --set shows them; in a change, 0 leaves
// one as it is.
type Timeouts struct {
	TCP    uint32 `json:"tcp"`
	TCPFin uint32 `json:"tcpfin"`
	UDP    uint32 `json:"udp"`
}

// Conn is a connection as listed (ipvsadm -lnc).
type Conn struct {
	Protocol    string `json:"protocol"`
	State       string `json:"state"`
	ExpiresMs   int64  `json:"expires_ms"`
	Source      string `json:"source"`
	Virtual     string `json:"virtual"`
	Local       string `json:"local"`
	Destination string `json:"destination"`
}

// IPVSVersion is the IPVS version tapvs answers as (ipvsadm's "IP Virtual
// Server version"), whose listings and rules it keeps.
const IPVSVersion = "1.2.1"

// Info describes the running tapvs.
type Info struct {
	Version  string `json:"version"`
	Size     int    `json:"size"` // connection table limit
	Conns    int    `json:"conns"`
	Services int    `json:"services"`
}

// Error codes; tapvsadm turns them into ipvsadm's messages.
const (
	CodeNoService     = "service_not_defined"
	CodeServiceExists = "service_exists"
	CodeNoDest        = "no_such_destination"
	CodeDestExists    = "destination_exists"
	CodeNoLocalAddr   = "no_such_local_address"
	CodeLocalExists   = "local_address_exists"
	CodeInvalid       = "invalid"
	CodeInternal      = "internal"
	// CodeNoConfig: POST /v1/reload to a tapvs without a configuration
	// file (pkg/tapvs), 404.
	CodeNoConfig = "no_configuration_file"
)

// Error is the API's error body.
type Error struct {
	Code    string `json:"code"`
	Message string `json:"error"`
	// Op is, for a refused batch, which operation (from 0) was refused.
	Op *int `json:"op,omitempty"`
}

func (e *Error) Error() string { return e.Message }

// Result is the answer to a change that has something to say beyond
// "applied" (200; a change with nothing to say is 204 and no body).
type Result struct {
	// Notes say how a reload of the configuration file will treat what the
	// change touched: kept across reloads unless the file changes that
	// value.
	Notes []string `json:"notes,omitempty"`
}

// Reload is the answer to POST /v1/reload: what the reload of the
// configuration file did.
type Reload struct {
	Changes int `json:"changes"` // the changes applied, as the transaction counts them
	// Reverted are the changes made at run time (the API, tapvsadm) that
	// a change of the file's overrode.
	Reverted []string `json:"reverted"`
	// Kept are the runtime changes to what the file declares whose values
	// the file did not change, and what was added at run time and the
	// file does not declare: left as they are.
	Kept []string `json:"kept"`
	// Restart are the settings the file changes that take a restart: they
	// keep their running values.
	Restart []string `json:"restart"`
}

// BGP is GET /v1/bgp: the instance's BGP speaker (404 with
// CodeNoBGP when the configuration has no bgp: section).
type BGP struct {
	ASN      uint32     `json:"asn"`
	RouterID string     `json:"router_id"`
	Peers    []BGPPeer  `json:"peers"`
	Routes   []BGPRoute `json:"routes"`
	// Announced and Withdrawn count route changes since start, each
	// prefix once per change whatever the number of peers.
	Announced uint64 `json:"announced"`
	Withdrawn uint64 `json:"withdrawn"`
	Draining  bool   `json:"draining"`
	// Joining: connection sync has yet to receive the table from its
	// peers; nothing is announced until it has.
	Joining bool `json:"joining"`
}

// BGPPeer is one router's session.
type BGPPeer struct {
	Address string `json:"address"`
	ASN     uint32 `json:"asn"`
	// State is RFC 4271's, lower case: idle, connect, active, opensent,
	// openconfirm, established.
	State string `json:"state"`
	// Since is when the session entered State (RFC 3339); for an
	// established session, its uptime's start.
	Since       string `json:"since"`
	Changes     uint64 `json:"changes"`     // state changes
	Established uint64 `json:"established"` // sessions that came up
	Received    uint64 `json:"received"`    // BGP messages
	Sent        uint64 `json:"sent"`
	LastError   string `json:"last_error,omitempty"` // why the last session ended
}

// BGPRoute is an announced prefix.
type BGPRoute struct {
	Prefix string `json:"prefix"`
	Kind   string `json:"kind"` // "vip" or "lip"
	// Backup is a backed-up peer's LIP's rank (bgp: backup_lips): 1 is
	// its first backup; 0 (absent) is this instance's own route.
	Backup int    `json:"backup,omitempty"`
	Since  string `json:"since"` // RFC 3339
}

// Drain is the answer to POST, GET and DELETE /v1/drain: whether the
// instance is drained (its VIPs withdrawn from every BGP peer while the
// connections it holds go on) and how many connections it still holds.
type Drain struct {
	Draining bool   `json:"draining"`
	Since    string `json:"since,omitempty"` // RFC 3339, when the drain began
	Conns    int    `json:"conns"`           // connections in the table
	// Empty is true once a drain has no connection left: the instance
	// can be stopped without breaking any.
	Empty bool `json:"empty"`
	// WithdrawnAt is when the withdrawal went to the routers (RFC 3339);
	// Empty waits a second past it, for what they sent before they acted.
	WithdrawnAt string `json:"withdrawn_at,omitempty"`
	// Withdrawn are the VIPs the drain took back from the routers (none
	// without a bgp: section: then a drain only reports the count).
	Withdrawn []string `json:"withdrawn"`
}

// CodeNoBGP: GET /v1/bgp to a tapvs without a bgp: section, 404.
const CodeNoBGP = "no_bgp"

// HealthCheck is a service's health check: the fields of the
// configuration file's health_check: block, by the same names (the file
// reads this type too), validated by the same code. PUT
// /v1/services/{proto}/{addr}/health takes it.
type HealthCheck struct {
	Type       string `json:"type,omitempty" mapstructure:"type"`
	Port       int    `json:"port,omitempty" mapstructure:"port"`
	Interval   string `json:"interval,omitempty" mapstructure:"interval"`
	Timeout    string `json:"timeout,omitempty" mapstructure:"timeout"`
	Rise       int    `json:"rise,omitempty" mapstructure:"rise"`
	Fall       int    `json:"fall,omitempty" mapstructure:"fall"`
	Path       string `json:"http_path,omitempty" mapstructure:"http_path"`
	Status     int    `json:"http_status,omitempty" mapstructure:"http_status"`
	BodySHA256 string `json:"http_body_sha256,omitempty" mapstructure:"http_body_sha256"`
	OnFailure  string `json:"on_failure,omitempty" mapstructure:"on_failure"`

	// keepalived's timing.
	ConnectTimeout   string `json:"connect_timeout,omitempty" mapstructure:"connect_timeout"` // keepalived's name for timeout
	Retry            int    `json:"retry,omitempty" mapstructure:"retry"`
	DelayBeforeRetry string `json:"delay_before_retry,omitempty" mapstructure:"delay_before_retry"`
	Warmup           string `json:"warmup,omitempty" mapstructure:"warmup"`

	VirtualHost string   `json:"virtualhost,omitempty" mapstructure:"virtualhost"` // http, ssl
	ServerName  string   `json:"server_name,omitempty" mapstructure:"server_name"` // ssl
	Verify      bool     `json:"verify,omitempty" mapstructure:"verify"`           // ssl
	CAFile      string   `json:"ca_file,omitempty" mapstructure:"ca_file"`         // ssl
	Script      []string `json:"script,omitempty" mapstructure:"script"`           // misc
	MiscDynamic bool     `json:"misc_dynamic,omitempty" mapstructure:"misc_dynamic"`
	Payload     string   `json:"payload,omitempty" mapstructure:"payload"`             // udp, hex
	Require     string   `json:"require_reply,omitempty" mapstructure:"require_reply"` // udp, hex
	DNSName     string   `json:"dns_name,omitempty" mapstructure:"dns_name"`
	DNSType     string   `json:"dns_type,omitempty" mapstructure:"dns_type"`
	HeloName    string   `json:"helo_name,omitempty" mapstructure:"helo_name"` // smtp
}

// Health is a service's health check as GET .../health answers it.
type Health struct {
	// Source is where the check comes from: "file" (the configuration
	// file's), "runtime" (set or stopped through the API or tapvsadm; the
	// next reload re-applies the file's) or "none".
	Source string `json:"source"`
	// Check is the runtime check as it was set; nil with Source "runtime":
	// the service's checks were stopped at run time.
	Check   *HealthCheck `json:"check,omitempty"`
	Servers []HealthView `json:"servers"`
}

// Fault is one fault (the configuration file's faults: entries, by the
// same names; the file reads this type too): exactly one target (a
// service "tcp 172.25.254.100:80" or "fwm 1", a real server
// "10.20.1.2:8080", or a client prefix), a direction (to_server,
// to_client, both: the default) and what it does. PUT /v1/faults takes a
// list of them, POST /v1/faults one.
type Fault struct {
	Service   string  `json:"service,omitempty" mapstructure:"service"`
	Server    string  `json:"server,omitempty" mapstructure:"server"`
	Client    string  `json:"client,omitempty" mapstructure:"client"`
	Direction string  `json:"direction,omitempty" mapstructure:"direction"`
	Blackhole bool    `json:"blackhole,omitempty" mapstructure:"blackhole"`
	Loss      float64 `json:"loss,omitempty" mapstructure:"loss"`
	Every     int     `json:"every,omitempty" mapstructure:"every"`
	SYN       string  `json:"syn,omitempty" mapstructure:"syn"`
	DropFIN   bool    `json:"drop_fin,omitempty" mapstructure:"drop_fin"`
	// Latency, Jitter and ResetAfter are durations as Go writes them
	// ("50ms", "1.5s").
	Latency string `json:"latency,omitempty" mapstructure:"latency"`
	Jitter  string `json:"jitter,omitempty" mapstructure:"jitter"`
	// Rate is a rate cap as tc writes one: "8mbit", "512kbit", "1mbps"
	// (bytes), "250000" (bytes a second).
	Rate       string  `json:"rate,omitempty" mapstructure:"rate"`
	Duplicate  float64 `json:"duplicate,omitempty" mapstructure:"duplicate"`
	Reorder    float64 `json:"reorder,omitempty" mapstructure:"reorder"`
	ResetBytes uint64  `json:"reset_bytes,omitempty" mapstructure:"reset_bytes"`
	ResetAfter string  `json:"reset_after,omitempty" mapstructure:"reset_after"`
}

// CodeNoFault: DELETE /v1/faults?... naming a target with no fault, 404.
const CodeNoFault = "no_fault"

// FaultView is a fault in force (GET /v1/faults) and what it has done
// since it was set.
type FaultView struct {
	Fault
	// Source is "file" (the configuration file's faults:) or "runtime"
	// (set through the API or tapvsadm; the next reload sets the file's).
	Source  string `json:"source"`
	Frames  uint64 `json:"frames"`  // frames of its target and direction it met
	Dropped uint64 `json:"dropped"` // frames it dropped, SYNs included
	Refused uint64 `json:"refused"` // SYNs it answered with an RST
	Delayed uint64 `json:"delayed"` // frames it put on a delay line, duplicates included
	Reset   uint64 `json:"reset"`   // connections it ended with RSTs
}

// Event is one event of GET /v1/events, a line of JSON each (package
// events says what each kind means). The fields a kind does not use are
// left out.
type Event struct {
	Kind     string    `json:"kind"`
	Time     time.Time `json:"time"`
	Service  string    `json:"service,omitempty"` // "tcp 172.25.254.100:80", "fwm 1"
	Server   string    `json:"server,omitempty"`  // the real server
	Client   string    `json:"client,omitempty"`
	VIP      string    `json:"vip,omitempty"`
	Local    string    `json:"local,omitempty"` // the local address tapvs opened the connection from
	Protocol string    `json:"protocol,omitempty"`
	State    string    `json:"state,omitempty"`
	Reason   string    `json:"reason,omitempty"`
	Count    uint64    `json:"count,omitempty"`
}
