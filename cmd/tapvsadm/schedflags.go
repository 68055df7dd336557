package main

import "strings"

// schedFlags reads --sched-flags as ipvsadm's parse_sched_flags does: names
// separated by commas (a lone "," names none, which -E uses to clear
// them). tapvs checks the names against the service's scheduler.
func schedFlags(c *command, u use) error {
	names := []string{}
	for n := range strings.SplitSeq(u.v, ",") {
		if n == "" {
			continue
		}
		names = append(names, n)
	}
	c.schedFlags = &names
	return nil
}
