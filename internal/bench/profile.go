package bench

import (
	"fmt"
	"net"
	"net/http"
	"net/http/pprof"
	"os"
	"path/filepath"
	"strings"
)

// EnvProfileDir names a directory: when it is set, every process of a
// benchmark run — the driver, the embedded cluster's raylets (and head) and
// the worker processes they start, which all run this binary — serves
// net/http/pprof on a loopback port and writes that port to
// <dir>/<role>-<pid>.addr, so that a long scale workload can be profiled in
// every process while it runs:
//
//	GORAY_BENCH_PROFILE_DIR=/tmp/prof goray bench -run many_actors &
//	go tool pprof -seconds 20 http://$(cat /tmp/prof/raylet-head-*.addr)/debug/pprof/profile
const EnvProfileDir = "GORAY_BENCH_PROFILE_DIR"

func init() {
	dir := os.Getenv(EnvProfileDir)
	if dir == "" {
		return
	}
	role := "driver"
	switch {
	case os.Getenv("GORAY_WORKER") == "1":
		role = "worker"
	case len(os.Args) > 1 && os.Args[1] == childRaylet:
		role = "raylet"
		if strings.Contains(strings.Join(os.Args, " "), " -head") {
			role = "raylet-head"
		}
	case len(os.Args) > 1 && os.Args[1] == childEcho:
		return
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	_ = os.MkdirAll(dir, 0o700)
	_ = os.WriteFile(filepath.Join(dir, fmt.Sprintf("%s-%d.addr", role, os.Getpid())), []byte(ln.Addr().String()), 0o600)
	go func() { _ = http.Serve(ln, mux) }()
}
