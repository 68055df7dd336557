package tapvs

import (
	"testing"

	"github.com/tapvs/tapvs/control/api"
)

// faultOf carries every counter the API lists, the delay and reset
// families' included.
func TestFaultOfCounters(t *testing.T) {
	v := api.FaultView{Fault: api.Fault{Client: "10.0.0.0/8", Direction: "both", DropFIN: true}, Frames: 1, Dropped: 2, Refused: 3, Delayed: 4, Reset: 5}
	fs, err := faultOf(v)
	if err != nil {
		t.Fatal(err)
	}
	if fs.Frames != 1 || fs.Dropped != 2 || fs.Refused != 3 || fs.Delayed != 4 || fs.Reset != 5 || !fs.DropFIN || fs.Client.String() != "10.0.0.0/8" {
		t.Fatalf("%+v read as %+v", v, fs)
	}
}
