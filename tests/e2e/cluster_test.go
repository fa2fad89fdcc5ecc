package e2e

// Helpers of the multi-process tier: building the binaries, and on top of
// internal/testcluster's process runner (raylets and drivers as process
// groups that are always stopped, the /proc leak check) the cluster of this
// tier's tests and the scans for workers.

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/goray/goray/internal/testcluster"
	"github.com/goray/goray/internal/testwait"
	"github.com/goray/goray/runtime"
)

// buildTimeout bounds building the binaries (no assertion on speed).
const buildTimeout = 5 * time.Minute

// stopTimeout is how long a process may take to exit after a signal.
const stopTimeout = testcluster.StopTimeout

// bins are the binaries TestMain builds.
var bins struct {
	dir       string // holds both binaries
	raylet    string
	driver    string
	driverSHA string // hex SHA-256 of driver: the job binary raylets run workers from
}

func TestMain(m *testing.M) {
	// A raylet started by TestNodeDeathShared runs its workers from this
	// binary.
	runtime.ServeIfWorker()
	code := testMain(m)
	if code == 0 {
		if err := goleak.Find(); err != nil {
			fmt.Fprintln(os.Stderr, "e2e: goroutines left after the tests:", err)
			code = 1
		}
	}
	os.Exit(code)
}

func testMain(m *testing.M) int {
	dir, err := os.MkdirTemp("", "goray-e2e-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, "e2e:", err)
		return 1
	}
	defer os.RemoveAll(dir)
	bins.dir = dir
	bins.raylet = filepath.Join(dir, "raylet")
	bins.driver = filepath.Join(dir, "driver")
	if err := buildBinaries(); err != nil {
		fmt.Fprintln(os.Stderr, "e2e:", err)
		return 1
	}
	return m.Run()
}

// buildBinaries builds the raylet and the driver, without -race so they
// start fast.
func buildBinaries() error {
	ctx, cancel := context.WithTimeout(context.Background(), buildTimeout)
	defer cancel()
	root, err := moduleRoot(ctx)
	if err != nil {
		return err
	}
	for _, b := range []struct{ out, pkg string }{
		{bins.raylet, "./cmd/raylet"},
		{bins.driver, "./tests/e2e/testdata/driver"},
	} {
		cmd := exec.CommandContext(ctx, "go", "build", "-o", b.out, b.pkg)
		cmd.Dir = root
		if out, err := cmd.CombinedOutput(); err != nil {
			return fmt.Errorf("go build -o %s %s: %v\n%s", b.out, b.pkg, err, out)
		}
	}
	data, err := os.ReadFile(bins.driver)
	if err != nil {
		return err
	}
	sum := sha256.Sum256(data)
	bins.driverSHA = hex.EncodeToString(sum[:])
	return nil
}

func moduleRoot(ctx context.Context) (string, error) {
	out, err := exec.CommandContext(ctx, "go", "env", "GOMOD").Output()
	if err != nil {
		return "", fmt.Errorf("go env GOMOD: %w", err)
	}
	gomod := strings.TrimSpace(string(out))
	if gomod == "" || gomod == os.DevNull {
		return "", errors.New("go env GOMOD: not inside the goray module")
	}
	return filepath.Dir(gomod), nil
}

// proc is a process a test started (testcluster.StartProc).
type proc = testcluster.Proc

// node is a running raylet process.
type node = testcluster.ProcNode

// procInfo is a process found in /proc.
type procInfo = testcluster.ProcInfo

// cluster is a set of raylet processes on loopback sharing one token file,
// all under one test directory (testcluster.Processes), and the drivers of
// this tier.
type cluster struct {
	*testcluster.Processes
}

// newCluster prepares a cluster in a fresh test directory (no process yet)
// and registers, before anything else starts, the check that no process of
// the test (or started from the built binaries) outlives it.
func newCluster(t testing.TB) *cluster {
	t.Helper()
	return &cluster{testcluster.NewProcesses(t, bins.raylet, bins.dir)}
}

// testDir makes the test's directory and registers the leak check for it; the
// check runs after every process of the test was stopped (cleanups run last
// registered first).
func testDir(t testing.TB) string {
	t.Helper()
	dir := t.TempDir()
	t.Cleanup(func() { testcluster.CheckNoLeaks(t, bins.dir, dir) })
	return dir
}

// driver starts the driver program connected to the head, with extra
// environment (E2E_MODE=... etc.); t (the test or subtest that runs it) stops
// it when it ends.
func (c *cluster) driver(t testing.TB, name string, withStdin bool, env ...string) *proc {
	t.Helper()
	env = append([]string{"GORAY_ADDRESS=" + c.Head.Addr, "GORAY_TOKEN_FILE=" + c.TokenFile}, env...)
	return testcluster.StartProc(t, "driver "+name, bins.driver, nil, env, withStdin)
}

// workers lists the goray worker processes started under dir: processes
// whose executable is the driver binary (as the job binary a raylet fetched
// into its data dir, named by its SHA-256) and whose environment has
// GORAY_WORKER=1.
func workers(dir string) []procInfo {
	ps := testcluster.ScanProcs(func(_ int, cmdline []string) bool {
		exe := cmdline[0]
		return strings.HasPrefix(exe, dir+string(filepath.Separator)) && filepath.Base(exe) == bins.driverSHA
	})
	var out []procInfo
	for _, p := range ps {
		env := testcluster.ReadEnviron(p.Pid)
		if env["GORAY_WORKER"] != "1" {
			continue
		}
		p.Env = env
		out = append(out, p)
	}
	return out
}

// workersByNode counts workers by their GORAY_NODE_ID.
func workersByNode(ws []procInfo) map[string]int {
	m := map[string]int{}
	for _, w := range ws {
		m[w.Env["GORAY_NODE_ID"]]++
	}
	return m
}

// waitNoWorkers waits up to d for every worker under dir to be gone and
// fails the test with the ones left.
func waitNoWorkers(t testing.TB, dir string, d time.Duration, after string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	var left []procInfo
	if testwait.Until(ctx, "no workers", func() bool { left = workers(dir); return len(left) == 0 }) == nil {
		return
	}
	t.Errorf("worker processes %s after %s: got %d:\n%s\nwant none", d, after, len(left), testcluster.FmtProcs(left))
}
