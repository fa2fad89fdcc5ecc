// Package memory tests, through the public SDK on a real embedded cluster
// (a head with its node in the test process; workers are the test binary),
// what the node does about memory: its memory monitor kills a task that
// allocates past the node's limit (the caller gets ErrOutOfMemory, a
// retriable task is retried, the node and its other workers live on), a
// worker the kernel's OOM killer kills is reported as out of memory too, and
// a job's object store pages are given back when the job ends.
//
// Set GORAY_TEST_LOG=1 to see the raylet's logs.
package memory

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/goray/goray/actor"
	"github.com/goray/goray/internal/embed"
	"github.com/goray/goray/internal/raylet"
	"github.com/goray/goray/internal/store"
	"github.com/goray/goray/internal/testcluster"
	"github.com/goray/goray/internal/testwait"
	"github.com/goray/goray/objectstore"
	"github.com/goray/goray/runtime"
	"github.com/goray/goray/task"
)

// The node's bound on its workers' summed private memory, and what a hog
// allocates (well past it; each worker process itself uses a few MiB).
const (
	limitMiB = 192
	hogMiB   = 448
)

// Counter is an actor on the node that must outlive the hogs.
type Counter struct{ n int }

// Inc adds one and returns the count.
func (c *Counter) Inc(context.Context) (int, error) { c.n++; return c.n, nil }

var (
	counterType = actor.Register("memtest.counter", func() *Counter { return &Counter{} })
	counterInc  = actor.Method0(counterType, "inc", (*Counter).Inc)

	// hog notes an attempt in the file attempts, then (unless onlyFirst
	// and this is not the first attempt) allocates and touches mib MiB and
	// holds it; the memory monitor kills it first.
	hog = task.Register3("memtest.hog", func(ctx context.Context, attempts string, mib int, onlyFirst bool) (string, error) {
		n, err := noteAttempt(attempts)
		if err != nil {
			return "", err
		}
		if onlyFirst && n > 1 {
			return fmt.Sprintf("attempt %d ran", n), nil
		}
		return hold(ctx, mib)
	})

	// cgroupHog moves its own process into the memory cgroup whose
	// cgroup.procs file is procs, then allocates mib MiB: the kernel's OOM
	// killer kills it.
	cgroupHog = task.Register2("memtest.cgroup_hog", func(ctx context.Context, procs string, mib int) (string, error) {
		if err := os.WriteFile(procs, []byte(strconv.Itoa(os.Getpid())), 0o644); err != nil {
			return "", err
		}
		return hold(ctx, mib)
	})

	ping = task.Register0("memtest.ping", func(context.Context) (string, error) { return "pong", nil })
)

// hold allocates mib MiB, touching every page, and keeps it for a minute
// (the task's work: holding memory until it is killed).
func hold(ctx context.Context, mib int) (string, error) {
	chunks := make([][]byte, 0, mib/8)
	for range mib / 8 {
		b := make([]byte, 8<<20)
		for i := 0; i < len(b); i += 4096 {
			b[i] = 1
		}
		chunks = append(chunks, b)
	}
	select {
	case <-ctx.Done():
	case <-time.After(time.Minute):
	}
	return fmt.Sprintf("held %d MiB and was not killed", len(chunks)*8), nil
}

// noteAttempt appends a line to path and returns how many it has.
func noteAttempt(path string) (int, error) {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o600)
	if err != nil {
		return 0, err
	}
	_, err = f.WriteString("attempt\n")
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return 0, err
	}
	return countAttempts(path), nil
}

func countAttempts(path string) int {
	b, _ := os.ReadFile(path)
	return bytes.Count(b, []byte("\n"))
}

// server is the embedded head and node TestMain started.
var server *embed.Server

// envDriver makes the test binary the driver of TestArenaPagesGivenBack.
const envDriver = "MEMTEST_DRIVER"

func TestMain(m *testing.M) {
	runtime.ServeIfWorker() // in a worker process: serve, never return
	if os.Getenv(envDriver) != "" {
		os.Exit(putDriver())
	}
	code := testMain(m)
	if code == 0 {
		if err := goleak.Find(); err != nil {
			fmt.Fprintln(os.Stderr, "memory: goroutines left after the tests:", err)
			code = 1
		}
	}
	os.Exit(code)
}

func testMain(m *testing.M) int {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	cfg := embed.Config{Head: true}
	cfg.Logger = testcluster.Logger()
	cfg.Resources = map[string]float64{"CPU": 2}
	cfg.MemoryLimit = limitMiB << 20
	cfg.MemoryMonitorInterval = 50 * time.Millisecond
	cfg.ObjectStoreMemory = 256 << 20
	var err error
	if server, err = embed.Start(ctx, cfg); err != nil {
		fmt.Fprintln(os.Stderr, "memory: start the cluster:", err)
		return 1
	}
	defer server.Close()
	if err := runtime.Init(ctx, runtime.WithAddress(server.Address()), runtime.WithToken(server.Token()),
		runtime.WithLogger(testcluster.Logger())); err != nil {
		fmt.Fprintln(os.Stderr, "memory: init:", err)
		return 1
	}
	defer runtime.Shutdown()
	return m.Run()
}

func testCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	t.Cleanup(cancel)
	return ctx
}

// spawnCounter spawns a Counter, killed when the test ends, and calls it
// once.
func spawnCounter(t *testing.T, ctx context.Context) actor.Handle[Counter] {
	t.Helper()
	h, err := actor.Spawn(ctx, counterType)
	if err != nil {
		t.Fatalf("spawn: %v", err)
	}
	t.Cleanup(func() { _ = actor.Kill(context.Background(), h) })
	if n, err := counterInc.Remote(ctx, h).Get(ctx); err != nil || n != 1 {
		t.Fatalf("first call: got %d, %v, want 1", n, err)
	}
	return h
}

// wantOOM fails t unless err is ErrOutOfMemory naming function, the node
// and, for the monitor, the figures.
func wantOOM(t *testing.T, got string, err error, function string, figures ...string) {
	t.Helper()
	if !errors.Is(err, runtime.ErrOutOfMemory) {
		t.Fatalf("got %q, %v, want ErrOutOfMemory", got, err)
	}
	t.Logf("the caller's error: %v", err)
	for _, s := range append([]string{function, server.Node().NodeID().String()}, figures...) {
		if !strings.Contains(err.Error(), s) {
			t.Errorf("error %q: want it to mention %q", err, s)
		}
	}
}

// TestMonitorKillsHog: a task that is not retried allocates past the node's
// limit; its caller gets ErrOutOfMemory with the figures, and the node, its
// actor and new tasks live on.
func TestMonitorKillsHog(t *testing.T) {
	ctx := testCtx(t)
	counter := spawnCounter(t, ctx)
	attempts := filepath.Join(t.TempDir(), "attempts")

	got, err := hog.Remote(ctx, objectstore.Val(attempts), objectstore.Val(hogMiB), objectstore.Val(false), task.WithMaxRetries(0)).Get(ctx)
	wantOOM(t, got, err, "memtest.hog", "memory monitor", "private memory", fmt.Sprintf("over the limit of %d.0 MiB", limitMiB))
	if n := countAttempts(attempts); n != 1 {
		t.Fatalf("attempts: got %d, want 1 (no retries)", n)
	}
	if n, err := counterInc.Remote(ctx, counter).Get(ctx); err != nil || n != 2 {
		t.Fatalf("the actor after the kill: got %d, %v, want 2 (it lives on)", n, err)
	}
	if got, err := ping.Remote(ctx).Get(ctx); err != nil || got != "pong" {
		t.Fatalf("a new task after the kill: got %q, %v, want pong", got, err)
	}
}

// TestMonitorRetries: a retriable hog is retried after each kill and fails
// with ErrOutOfMemory when its retries run out; one that needs the memory
// only on its first attempt succeeds on the retry.
func TestMonitorRetries(t *testing.T) {
	ctx := testCtx(t)
	counter := spawnCounter(t, ctx)

	attempts := filepath.Join(t.TempDir(), "attempts")
	got, err := hog.Remote(ctx, objectstore.Val(attempts), objectstore.Val(hogMiB), objectstore.Val(false), task.WithMaxRetries(2)).Get(ctx)
	wantOOM(t, got, err, "memtest.hog", "the newest lease of retriable tasks")
	if n := countAttempts(attempts); n != 3 {
		t.Fatalf("attempts with 2 retries: got %d, want 3", n)
	}

	once := filepath.Join(t.TempDir(), "once")
	got, err = hog.Remote(ctx, objectstore.Val(once), objectstore.Val(hogMiB), objectstore.Val(true), task.WithMaxRetries(1)).Get(ctx)
	if err != nil || got != "attempt 2 ran" {
		t.Fatalf("a hog on its first attempt only: got %q, %v, want \"attempt 2 ran\"", got, err)
	}
	if n, err := counterInc.Remote(ctx, counter).Get(ctx); err != nil || n != 2 {
		t.Fatalf("the actor after the kills: got %d, %v, want 2 (it lives on)", n, err)
	}
}

// memoryCgroup is this process's memory cgroup directory and whether it is
// cgroup v2, or "" when there is none.
func memoryCgroup() (string, bool) {
	b, err := os.ReadFile("/proc/self/cgroup")
	if err != nil {
		return "", false
	}
	v2 := ""
	for _, line := range strings.Split(strings.TrimSpace(string(b)), "\n") {
		parts := strings.SplitN(line, ":", 3)
		if len(parts) != 3 {
			continue
		}
		if strings.Contains(","+parts[1]+",", ",memory,") {
			return filepath.Join("/sys/fs/cgroup/memory", parts[2]), false
		}
		if parts[0] == "0" && parts[1] == "" {
			v2 = filepath.Join("/sys/fs/cgroup", parts[2])
		}
	}
	if v2 != "" {
		if _, err := os.Stat(filepath.Join(v2, "memory.max")); err == nil {
			return v2, true
		}
	}
	return "", false
}

// TestKernelOOMKill: a task the kernel's OOM killer kills (in a memory
// cgroup of 64 MiB, far under the monitor's limit) fails with
// ErrOutOfMemory, not a bare crash.
func TestKernelOOMKill(t *testing.T) {
	parent, v2 := memoryCgroup()
	if parent == "" {
		t.Skip("no memory cgroup to make a small one in")
	}
	dir := filepath.Join(parent, fmt.Sprintf("goray-memtest-%d", os.Getpid()))
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Skipf("cannot make a memory cgroup (needs root or a delegated cgroup): %v", err)
	}
	t.Cleanup(func() {
		// Once the killed worker is gone the cgroup is empty; a process
		// left in it (the test failed) goes back to the parent cgroup.
		testwait.Eventually(t, 20*time.Second, "the test's memory cgroup removed", func() bool {
			if b, err := os.ReadFile(filepath.Join(dir, "cgroup.procs")); err == nil {
				for _, pid := range strings.Fields(string(b)) {
					_ = os.WriteFile(filepath.Join(parent, "cgroup.procs"), []byte(pid), 0o644)
				}
			}
			return syscall.Rmdir(dir) == nil
		})
	})
	limitFile := "memory.limit_in_bytes"
	if v2 {
		limitFile = "memory.max"
		_ = os.WriteFile(filepath.Join(dir, "memory.swap.max"), []byte("0"), 0o644)
	}
	if err := os.WriteFile(filepath.Join(dir, limitFile), []byte(strconv.Itoa(64<<20)), 0o644); err != nil {
		t.Fatalf("set the cgroup's limit: %v", err)
	}
	ctx := testCtx(t)
	got, err := cgroupHog.Remote(ctx, objectstore.Val(filepath.Join(dir, "cgroup.procs")), objectstore.Val(128), task.WithMaxRetries(0)).Get(ctx)
	wantOOM(t, got, err, "memtest.cgroup_hog", "kernel's OOM killer")
	if got, err := ping.Remote(ctx).Get(ctx); err != nil || got != "pong" {
		t.Fatalf("a new task after the kernel's kill: got %q, %v, want pong", got, err)
	}
}

// putDriver is the driver of TestArenaPagesGivenBack: it puts objects into
// the node's arena, says READY, and exits when its stdin closes (its job
// ends).
func putDriver() int {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := runtime.Init(ctx, runtime.WithLogger(testcluster.Logger())); err != nil {
		fmt.Fprintln(os.Stderr, "driver: init:", err)
		return 1
	}
	defer runtime.Shutdown()
	var refs []objectstore.Ref[[]byte]
	for i := range 8 {
		r, err := objectstore.Put(ctx, bytes.Repeat([]byte{byte(i + 1)}, 4<<20))
		if err != nil {
			fmt.Fprintln(os.Stderr, "driver: put:", err)
			return 1
		}
		refs = append(refs, r)
	}
	fmt.Println("READY", len(refs))
	_, _ = bufio.NewReader(os.Stdin).ReadString('\n')
	return 0
}

// allocated is the bytes of path's file that hold pages.
func allocated(t *testing.T, path string) int64 {
	t.Helper()
	var st syscall.Stat_t
	if err := syscall.Stat(path, &st); err != nil {
		t.Fatal(err)
	}
	return st.Blocks * 512
}

// TestArenaPagesGivenBack: a job's objects fill arena pages; when the job
// ends (its driver exits), the node gives those pages back to the system:
// the arena file's allocated blocks drop.
func TestArenaPagesGivenBack(t *testing.T) {
	arena := store.ArenaPath(server.Node().StoreDir())
	before := allocated(t, arena)
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	d := exec.Command(exe, "-test.run=^$")
	d.Env = append(testcluster.CleanEnv(), envDriver+"=1", "GORAY_ADDRESS="+server.Address(), raylet.EnvToken+"="+server.Token())
	d.Stderr = os.Stderr
	stdin, err := d.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := d.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := d.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = d.Process.Kill(); _ = d.Wait() })
	line, err := bufio.NewReader(stdout).ReadString('\n')
	if err != nil || strings.TrimSpace(line) != "READY 8" {
		t.Fatalf("driver: got %q, %v, want READY 8", line, err)
	}
	during := allocated(t, arena)
	if during < before+32<<20 {
		t.Fatalf("arena allocated with the job's 32 MiB of objects: got %d bytes, want >= %d", during, before+32<<20)
	}
	stdin.Close() // the driver exits; the head finishes its job
	if err := d.Wait(); err != nil {
		t.Fatalf("driver: got %v, want exit status 0", err)
	}
	var after int64
	testwait.Eventually(t, 30*time.Second, "the job's arena pages given back", func() bool {
		after = allocated(t, arena)
		return after <= before
	})
	t.Logf("arena allocated: %d bytes before the job, %d with its objects, %d after it ended", before, during, after)
}
