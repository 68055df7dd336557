package main

import (
	"fmt"
	"io"
	"net/url"
	"os"
	"strconv"

	"github.com/tapvs/tapvs/control/api"
)

// capture writes a pcap of the service's traffic, both sides, to c.capture.
func capture(cl *api.Client, c *command, out io.Writer) error {
	count := c.count
	if count == 0 {
		count = 100
	}
	q := url.Values{"proto": {c.proto}, "addr": {c.service}, "count": {strconv.Itoa(count)}}
	resp, err := cl.Get("/v1/capture?" + q.Encode())
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	f, err := os.Create(c.capture)
	if err != nil {
		return err
	}
	n, err := io.Copy(f, resp.Body)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("capture to %s: %w", c.capture, err)
	}
	fmt.Fprintf(out, "%d bytes of pcap written to %s\n", n, c.capture)
	return nil
}
