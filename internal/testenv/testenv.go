// Package testenv holds what the SDK's test packages share: a TestMain that
// runs the package's tests on an embedded cluster whose workers are the test
// binary itself and then checks that no goroutine was left behind, and a
// per-test deadline. Tests wait for conditions with internal/testwait; whole
// clusters (several nodes, processes) are internal/testcluster's.
package testenv

import (
	"context"
	"fmt"
	"os"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/goray/goray/runtime/goraytest"
)

// Main is a TestMain: in a worker process started by a raylet it serves and
// never returns; otherwise it starts an embedded cluster, runs the tests,
// stops the cluster and fails when a goroutine is left (goleak): the driver,
// the head and the node must stop and wait for every goroutine they start.
func Main(m *testing.M) {
	code := goraytest.Run(m)
	if code == 0 {
		if err := goleak.Find(); err != nil {
			fmt.Fprintln(os.Stderr, "goroutines left after the tests and the cluster stopped:", err)
			code = 1
		}
	}
	os.Exit(code)
}

// Ctx bounds a test so that a hang fails it instead of the whole binary.
func Ctx(t *testing.T, d time.Duration) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), d)
	t.Cleanup(cancel)
	return ctx
}
