package config

import (
	"encoding/hex"
	"strings"
	"time"

	"github.com/tapvs/tapvs/health"
)

// A service's or a real server's health_check: section.

type rawHealth struct {
	Type       string `mapstructure:"type"`
	Port       int    `mapstructure:"port"`
	Interval   string `mapstructure:"interval"`
	Timeout    string `mapstructure:"timeout"`
	Rise       int    `mapstructure:"rise"`
	Fall       int    `mapstructure:"fall"`
	Path       string `mapstructure:"http_path"`
	Status     int    `mapstructure:"http_status"`
	BodySHA256 string `mapstructure:"http_body_sha256"`
	OnFailure  string `mapstructure:"on_failure"`
}

func healthSpec(e *errs, f string, r *rawHealth) *health.Spec {
	if r.Type == "none" {
		return nil
	}
	s := &health.Spec{Type: r.Type, Rise: r.Rise, Fall: r.Fall, Path: r.Path, Status: r.Status, BodySHA256: strings.ToLower(r.BodySHA256)}
	if s.Type == "" {
		s.Type = "tcp"
	}
	if s.Type != "tcp" && s.Type != "http" {
		e.add(f+".type", "%q is not a check (tcp, http or none)", r.Type)
	}
	if r.Port != 0 {
		s.Port, _ = port(e, f+".port", r.Port)
	}
	dur := func(field, v, def string) time.Duration {
		if v == "" {
			v = def
		}
		d, err := time.ParseDuration(v)
		if err != nil || d < 10*time.Millisecond || d > time.Hour {
			e.add(f+"."+field, "%q is not a duration from 10ms to 1h", v)
		}
		return d
	}
	s.Interval = dur("interval", r.Interval, "2s")
	s.Timeout = dur("timeout", r.Timeout, "1s")
	if s.Timeout > s.Interval {
		e.add(f+".timeout", "%s is longer than the interval %s", s.Timeout, s.Interval)
	}
	if s.Rise == 0 {
		s.Rise = 2
	}
	if s.Fall == 0 {
		s.Fall = 2
	}
	if s.Rise < 1 || s.Rise > 100 {
		e.add(f+".rise", "%d is out of range 1-100", s.Rise)
	}
	if s.Fall < 1 || s.Fall > 100 {
		e.add(f+".fall", "%d is out of range 1-100", s.Fall)
	}
	if s.Type == "http" {
		if s.Path == "" {
			s.Path = "/"
		}
		if !strings.HasPrefix(s.Path, "/") {
			e.add(f+".http_path", "%q does not start with /", s.Path)
		}
		if s.Status != 0 && (s.Status < 100 || s.Status > 599) {
			e.add(f+".http_status", "%d is not an HTTP status", s.Status)
		}
		if s.BodySHA256 != "" {
			if b, err := hex.DecodeString(s.BodySHA256); err != nil || len(b) != 32 {
				e.add(f+".http_body_sha256", "%q is not a SHA-256 in hex", r.BodySHA256)
			}
		}
	}
	switch r.OnFailure {
	case "", "quiesce":
	case "remove":
		s.Remove = true
	default:
		e.add(f+".on_failure", "%q is not quiesce or remove", r.OnFailure)
	}
	return s
}
