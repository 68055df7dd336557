package config

import (
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"
)

// Each RestartOnly field's key is a key of the file (it walks raw's
// mapstructure tags), and no two fields share one: a reload names what
// waits for a restart as the operator wrote it.
func TestRestartOnlyKeysAreTheFile(t *testing.T) {
	seen := map[string]bool{}
	for i, key := range restartKeys {
		name := reflect.TypeFor[RestartOnly]().Field(i).Name
		if key == "" || seen[key] {
			t.Fatalf("field %s: key %q is empty or taken", name, key)
		}
		seen[key] = true
		typ := reflect.TypeFor[raw]()
		for _, part := range strings.Split(key, ".") {
			for typ.Kind() == reflect.Pointer {
				typ = typ.Elem()
			}
			f, ok := fieldByTag(typ, part)
			if !ok {
				t.Fatalf("field %s: key %q: %q is not in the file", name, key, part)
			}
			typ = f.Type
		}
	}
}

func fieldByTag(t reflect.Type, tag string) (reflect.StructField, bool) {
	if t.Kind() != reflect.Struct {
		return reflect.StructField{}, false
	}
	for i := range t.NumField() {
		if f := t.Field(i); f.Tag.Get("mapstructure") == tag {
			return f, true
		}
	}
	return reflect.StructField{}, false
}

// A configuration that sets every restart-only value; changing any one
// field (to its zero value) is named, by that field's key alone, and an
// equal configuration names none.
func TestChangedNamesEachField(t *testing.T) {
	c, err := Parse(strings.Replace(validHandoff, "interfaces:\n", "interfaces:\n  busy_poll: 1ms\n  pollers: 1\n  poll_groups: [[0]]\n", 1) + syncSection +
		"limits: {port_quarantine: 1s}\nmetrics: {listen: 127.0.0.1:9100}\n")
	if err != nil {
		t.Fatal(err)
	}
	again, err := Parse(strings.Replace(validHandoff, "interfaces:\n", "interfaces:\n  busy_poll: 1ms\n  pollers: 1\n  poll_groups: [[0]]\n", 1) + syncSection +
		"limits: {port_quarantine: 1s}\nmetrics: {listen: 127.0.0.1:9100}\n")
	if err != nil {
		t.Fatal(err)
	}
	if got := c.RestartOnly.Changed(&again.RestartOnly); len(got) != 0 {
		t.Fatalf("the same file read twice: %v changed", got)
	}
	v := reflect.ValueOf(c.RestartOnly)
	for i := range v.NumField() {
		if v.Field(i).IsZero() {
			t.Fatalf("bad test: %s is zero in the file", restartKeys[i])
		}
		next := c.RestartOnly
		reflect.ValueOf(&next).Elem().Field(i).SetZero()
		if got := c.RestartOnly.Changed(&next); !slices.Equal(got, []string{restartKeys[i]}) {
			t.Errorf("%s zeroed: changed %v", restartKeys[i], got)
		}
	}
	// Two at once, in the file's order.
	next := c.RestartOnly
	next.Sweep, next.Client.MTU = 2*time.Second, 1400
	if got := c.RestartOnly.Changed(&next); !slices.Equal(got, []string{"interfaces.client", "sweep_interval"}) {
		t.Errorf("mtu and sweep: changed %v", got)
	}
}
