package daemon

import (
	"context"
	"os"
	"time"

	"github.com/tapvs/tapvs/config"
	"github.com/tapvs/tapvs/control/api"
)

// settle is how long a change to the file is let settle before it is read:
// an editor's save is a burst of writes (or a write and a rename), and it is
// one reload, of the file as the burst left it.
const settle = 200 * time.Millisecond

// ReloadOn reloads the configuration at path (Reload: applied, or refused
// with the running configuration kept) whenever a signal arrives on sigs
// (tapvs run passes SIGHUP), the file is written or replaced, or the
// control API asks (POST /v1/reload), until ctx ends. A burst of signals
// and changes is one reload.
func (d *Daemon) ReloadOn(ctx context.Context, sigs <-chan os.Signal, path string) {
	reload := make(chan struct{}, 1)
	poke := func() {
		select {
		case reload <- struct{}{}:
		default:
		}
	}
	config.Watch(path, poke)
	// The control API reloads this file too (POST /v1/reload), and answers
	// each change with how a reload will treat it.
	d.Manager.SetReload(func() (api.Reload, error) { return d.reload(path) })
	d.Manager.SetNotes(d.notes)
	for {
		select {
		case <-ctx.Done():
			return
		case <-sigs:
			poke()
		case <-reload:
			select {
			case <-ctx.Done():
				return
			case <-time.After(settle):
			}
			select {
			case <-reload:
			default:
			}
			d.Reload(path) // logs what it did or why it refused
		}
	}
}
