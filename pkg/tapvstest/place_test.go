package tapvstest

import "testing"

// Real servers go round the subnets; without Subnets, rs2 is alone on
// the second and the others share the first, as before the option.
func TestPlace(t *testing.T) {
	for _, c := range []struct{ i, subnets, subnet, host int }{
		{0, 0, 0, 2}, {1, 0, 1, 2}, {2, 0, 0, 3}, {3, 0, 0, 4}, {252, 0, 0, 253},
		{0, 1, 0, 2}, {1, 1, 0, 3}, {252, 1, 0, 254},
		{0, 3, 0, 2}, {1, 3, 1, 2}, {2, 3, 2, 2}, {3, 3, 0, 3}, {4, 3, 1, 3},
	} {
		if k, h := place(c.i, c.subnets); k != c.subnet || h != c.host {
			t.Errorf("place(%d, %d) = %d, %d; want %d, %d", c.i, c.subnets, k, h, c.subnet, c.host)
		}
	}
}
