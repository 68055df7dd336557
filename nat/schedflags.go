package nat

import (
	"fmt"
	"strings"
)

// SchedFlags are a service's scheduler flags, IPVS's IP_VS_SVC_F_SCHED1 and
// 2: only sh and mh read them, under their own names (ipvsadm's
// --sched-flags sh-fallback,sh-port).
type SchedFlags uint8

// The flags, in IPVS's bit order.
const (
	SchedFallback SchedFlags = 1 << iota // sh-fallback, mh-fallback (flag-1): an unavailable hashed server hands over to another
	SchedPort                            // sh-port, mh-port (flag-2): the client's source port is hashed with its address
)

// schedFlagNames are the flags' names after the scheduler's ("sh-port"),
// by bit.
var schedFlagNames = [...]string{"fallback", "port"}

// flagged reports whether scheduler sched reads flags.
func flagged(sched string) bool { return sched == "sh" || sched == "mh" }

// ParseSchedFlags reads flag names for scheduler sched as ipvsadm's
// --sched-flags takes them: sh-fallback, sh-port, mh-fallback, mh-port,
// or flag-1 and flag-2 for the first two. A name that is not one of
// sched's is refused, naming it; with names, an unknown sched is refused
// as ValidScheduler refuses it.
func ParseSchedFlags(sched string, names []string) (SchedFlags, error) {
	if err := ValidScheduler(sched); err != nil && len(names) > 0 {
		return 0, err
	}
	var f SchedFlags
	for _, n := range names {
		bit, ok := SchedFlags(0), false
		for i, s := range schedFlagNames {
			if flagged(sched) && (n == sched+"-"+s || n == fmt.Sprintf("flag-%d", i+1)) {
				bit, ok = 1<<i, true
			}
		}
		if !ok {
			return 0, fmt.Errorf("%q is not a flag of scheduler %s (%s)", n, sched, flagsOf(sched))
		}
		f |= bit
	}
	return f, nil
}

// flagsOf says which flags sched takes.
func flagsOf(sched string) string {
	if !flagged(sched) {
		return "it takes none; sh and mh take them"
	}
	names := make([]string, len(schedFlagNames))
	for i, s := range schedFlagNames {
		names[i] = sched + "-" + s
	}
	return "it takes " + strings.Join(names, ", ")
}

// CheckSchedFlags reports whether sched takes every flag of f.
func CheckSchedFlags(sched string, f SchedFlags) error {
	if f == 0 {
		return nil
	}
	if !flagged(sched) || f >= 1<<len(schedFlagNames) {
		return fmt.Errorf("scheduler flags %s do not fit scheduler %s (%s)", strings.Join(f.Names(sched), ","), sched, flagsOf(sched))
	}
	return nil
}

// Names are f's names as ipvsadm prints them for scheduler sched
// (print_sched_flags): sh-fallback before sh-port, flag-N for a bit sched
// has no name for.
func (f SchedFlags) Names(sched string) []string {
	var names []string
	for i := range 8 {
		if f&(1<<i) == 0 {
			continue
		}
		if flagged(sched) && i < len(schedFlagNames) {
			names = append(names, sched+"-"+schedFlagNames[i])
		} else {
			names = append(names, fmt.Sprintf("flag-%d", i+1))
		}
	}
	return names
}
