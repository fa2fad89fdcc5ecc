// Package testenv holds what the SDK's test packages share: a TestMain that
// runs the package's tests on an embedded cluster whose workers are the test
// binary itself, and a per-test deadline.
package testenv

import (
	"context"
	"fmt"
	"os"
	"testing"
	"time"

	"github.com/goray/goray/runtime"
)

// Main is a TestMain: in a worker process started by a raylet it serves and
// never returns; otherwise it starts an embedded cluster, runs the tests and
// stops the cluster.
func Main(m *testing.M) {
	runtime.ServeIfWorker()
	if err := runtime.Init(context.Background()); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	code := m.Run()
	runtime.Shutdown()
	os.Exit(code)
}

// Ctx bounds a test so that a hang fails it instead of the whole binary.
func Ctx(t *testing.T, d time.Duration) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), d)
	t.Cleanup(cancel)
	return ctx
}
