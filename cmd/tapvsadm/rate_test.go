package main

import (
	"bytes"
	"strings"
	"testing"

	"github.com/tapvs/tapvs/control/api"
)

// --rate prints ipvsadm's five rate columns in order, each from its own
// field, rounded to the nearest whole number, in 8 columns (large ones in
// K/M as ipvsadm shows them, unless --exact); --stats the five counters.
func TestRateAndStatsColumns(t *testing.T) {
	svcs := []api.Service{{ServiceKey: api.ServiceKey{Protocol: "tcp", Addr: "172.25.254.100:80"},
		Rate:  api.Rate{CPS: 1.49, InPPS: 2.5, OutPPS: 3.51, InBPS: 123456789.4, OutBPS: 0.49},
		Stats: api.Traffic{Conns: 1, InPkts: 22, OutPkts: 333, InBytes: 4444, OutBytes: 123456789012},
		Dests: []api.Dest{{Addr: "172.25.84.2:80", Rate: api.Rate{CPS: 9, InPPS: 8.7, OutPPS: 0, InBPS: 99999999.4, OutBPS: 100000000},
			Stats: api.Traffic{Conns: 5, InPkts: 4, OutPkts: 3, InBytes: 2, OutBytes: 1}}}}}
	for _, tc := range []struct {
		args string
		want string
	}{
		{"-L -n --rate",
			"Prot LocalAddress:Port                 CPS    InPPS   OutPPS    InBPS   OutBPS\n" +
				"  -> RemoteAddress:Port\n" +
				"TCP  172.25.254.100:80                   1        3        4  123456K        0\n" +
				"  -> 172.25.84.2:80                      9        9        0 99999999  100000K\n"},
		{"-L -n --rate --exact",
			"Prot LocalAddress:Port                 CPS    InPPS   OutPPS    InBPS   OutBPS\n" +
				"  -> RemoteAddress:Port\n" +
				"TCP  172.25.254.100:80                   1        3        4 123456789        0\n" +
				"  -> 172.25.84.2:80                      9        9        0 99999999 100000000\n"},
		{"-L -n --stats",
			"Prot LocalAddress:Port               Conns   InPkts  OutPkts  InBytes OutBytes\n" +
				"  -> RemoteAddress:Port\n" +
				"TCP  172.25.254.100:80                   1       22      333     4444     123G\n" +
				"  -> 172.25.84.2:80                      5        4        3        2        1\n"},
	} {
		c, err := parse(strings.Fields(tc.args))
		if err != nil {
			t.Fatalf("%s: %v", tc.args, err)
		}
		var b bytes.Buffer
		printList(&b, api.Info{Version: "1.2.1", Size: 4194304}, svcs, c)
		want := "IP Virtual Server version 1.2.1 (size=4194304)\n" + tc.want
		if b.String() != want {
			t.Errorf("%s: got\n%s\nwant\n%s", tc.args, b.String(), want)
		}
	}
}
