package daemon

import (
	"context"
	"os"
	"time"

	"github.com/tapvs/tapvs/config"
)

// settle is how long a change to the file is let settle before it is read:
// an editor's save is a burst of writes (or a write and a rename), and it is
// one reload, of the file as the burst left it.
const settle = 200 * time.Millisecond

// ReloadOn reloads the configuration at path (Reload: applied, or refused
// with the running configuration kept) whenever a signal arrives on sigs
// (tapvs run passes SIGHUP) or the file is written or replaced, until ctx
// ends. A burst of signals and changes is one reload.
func (d *Daemon) ReloadOn(ctx context.Context, sigs <-chan os.Signal, path string) {
	reload := make(chan struct{}, 1)
	poke := func() {
		select {
		case reload <- struct{}{}:
		default:
		}
	}
	config.Watch(path, poke)
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
