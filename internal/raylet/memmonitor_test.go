package raylet

import (
	"errors"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/goray/goray/internal/errs"
	"github.com/goray/goray/internal/ids"
	"github.com/goray/goray/internal/sched"
	pb "github.com/goray/goray/proto/goray/v1"
)

// fakeMemory is a memorySource with set figures.
type fakeMemory struct {
	mu    sync.Mutex
	nm    nodeMemory
	rss   map[int]uint64
	kills uint64
}

func (f *fakeMemory) node() (nodeMemory, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.nm, nil
}

func (f *fakeMemory) private(pid int) (uint64, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	n, ok := f.rss[pid]
	if !ok {
		return 0, errors.New("no such process")
	}
	return n, nil
}

func (f *fakeMemory) oomKills() (uint64, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.kills, nil
}

// monitorFixture is a worker pool (with a fake launcher) watched by a
// memory monitor over fakeMemory; the monitor's kills are recorded, not
// sent (the workers' pids are made up).
type monitorFixture struct {
	t      *testing.T
	pool   *workerPool
	leases *leaseManager
	mem    *fakeMemory
	mon    *memoryMonitor
	job    *job
	killed []*worker
	pid    int
}

func newMonitorFixture(t *testing.T, cfg Config) *monitorFixture {
	p, leases, _ := newTestPool(t, 8, 8)
	f := &monitorFixture{t: t, pool: p, leases: leases, mem: &fakeMemory{rss: map[int]uint64{}}, pid: 1000}
	f.mon = newMemoryMonitor(leases.self, cfg, f.mem, p, slog.New(slog.NewTextHandler(io.Discard, nil)))
	f.mon.kill = func(w *worker) { f.killed = append(f.killed, w) }
	f.job, _ = p.job(ids.JobIDFromUint32(1))
	return f
}

// setPID gives w a made-up pid using rss bytes.
func (f *monitorFixture) setPID(w *worker, rss uint64) {
	f.pid++
	f.pool.mu.Lock()
	w.pid = f.pid
	f.pool.mu.Unlock()
	f.mem.mu.Lock()
	f.mem.rss[f.pid] = rss
	f.mem.mu.Unlock()
}

// lease leases a task worker for function using rss bytes.
func (f *monitorFixture) lease(function string, retriable bool, rss uint64) *lease {
	l := leaseFromPool(f.t, f.pool, f.leases, f.job, sched.Resources{"CPU": 1})
	f.pool.noteTask(l, function, retriable)
	f.setPID(l.worker, rss)
	return l
}

// exit makes w's process exit as its wait goroutine would.
func (f *monitorFixture) exit(w *worker) {
	f.pool.exited(w, "killed by signal killed (9)", f.pool.monitorCause(w))
}

func TestMemoryMonitorKillsNewestRetriableFirst(t *testing.T) {
	f := newMonitorFixture(t, Config{MemoryUsageThreshold: 1, MemoryLimit: 1000, MemoryMonitorInterval: DefaultMemoryMonitorInterval})
	oldRetriable := f.lease("old_retriable", true, 100)
	notRetried := f.lease("not_retried", false, 100)
	newRetriable := f.lease("new_retriable", true, 100)
	idle := f.lease("idle", true, 50)
	f.leases.dropLease(idle)
	f.pool.returnLease(idle, false)
	host, started, err := f.pool.placeActor(f.job, ids.NewActorID(f.job.id), sched.Resources{}, nil)
	if err != nil || !started {
		t.Fatalf("placeActor: got %v, started %v", err, started)
	}
	if err := f.pool.launch(t.Context(), host.worker); err != nil {
		t.Fatal(err)
	}
	f.setPID(host.worker, 400)

	if w := f.mon.check(); w != nil {
		t.Fatalf("check at 750 of 1000 bytes: got a kill of %s, want none", w.function)
	}
	f.mem.mu.Lock()
	f.mem.rss[newRetriable.worker.pid] = 500 // now 1150 > 1000
	f.mem.mu.Unlock()
	f.mon.limit = 10 // and over it still after each kill

	want := []*worker{newRetriable.worker, oldRetriable.worker, notRetried.worker, idle.worker, host.worker}
	names := []string{"newest retriable", "older retriable", "not retried", "idle task worker", "actor host"}
	for i, w := range want {
		got := f.mon.check()
		if got != w {
			t.Fatalf("kill %d: got worker %v, want the %s one", i, got, names[i])
		}
		if again := f.mon.check(); again != nil {
			t.Fatalf("check before the victim exited: got a kill, want none (one at a time)")
		}
		f.exit(w)
	}
	if got := len(f.killed); got != len(want) {
		t.Fatalf("kills: got %d, want %d", got, len(want))
	}
	if w := f.mon.check(); w != nil {
		t.Fatalf("check with no worker left: got a kill, want none")
	}

	// The holder of the newest lease learns why its worker died.
	cause := f.pool.takeDeath(newRetriable.id)
	if cause == nil {
		t.Fatal("takeDeath of the killed lease: got nil, want the monitor's cause")
	}
	if !errors.Is(cause, errs.ErrOutOfMemory) {
		t.Fatalf("cause: got %v, want ErrOutOfMemory", cause)
	}
	for _, s := range []string{f.leases.self.String(), "1.1 KiB", "over the limit of 10 B", "the newest lease of retriable tasks", "this worker used 500 B"} {
		if !strings.Contains(cause.Error(), s) {
			t.Errorf("cause %q: want it to mention %q", cause.Error(), s)
		}
	}
	if again := f.pool.takeDeath(newRetriable.id); again != nil {
		t.Fatalf("second takeDeath: got %v, want nil (taken)", again)
	}
}

func TestMemoryMonitorThreshold(t *testing.T) {
	f := newMonitorFixture(t, Config{MemoryUsageThreshold: 0.9, MemoryMonitorInterval: DefaultMemoryMonitorInterval})
	l := f.lease("hog", true, 100)
	f.mem.nm = nodeMemory{used: 80, total: 100, source: "system"}
	if w := f.mon.check(); w != nil {
		t.Fatal("check at 80% of a 90% threshold: got a kill, want none")
	}
	f.mem.nm.used = 95
	if w := f.mon.check(); w != l.worker {
		t.Fatalf("check at 95%%: got %v, want the leased worker killed", w)
	}
	f.exit(l.worker)
	cause := f.pool.takeDeath(l.id)
	if cause == nil || !strings.Contains(cause.Error(), "95 B of 100 B (95.0%, system) is over the threshold of 90%") {
		t.Fatalf("cause: got %v, want the figures", cause)
	}
}

func TestMemoryDefaultsAndBounds(t *testing.T) {
	t.Setenv(EnvMemoryUsageThreshold, "")
	t.Setenv(EnvMemoryLimit, "")
	t.Setenv(EnvMemoryMonitorInterval, "")
	c := Config{}.withDefaults()
	if c.MemoryUsageThreshold != DefaultMemoryUsageThreshold || c.MemoryLimit != 0 || c.MemoryMonitorInterval != DefaultMemoryMonitorInterval {
		t.Fatalf("defaults: got %v, %d, %s", c.MemoryUsageThreshold, c.MemoryLimit, c.MemoryMonitorInterval)
	}
	for _, tt := range []struct {
		name string
		cfg  Config
		env  [2]string
		want string // "" for valid
	}{
		{"threshold above 1", Config{MemoryUsageThreshold: 1.5}, [2]string{}, "want a fraction in [0, 1]"},
		{"negative limit", Config{MemoryLimit: -1}, [2]string{}, "want >= 0"},
		{"interval too short", Config{MemoryMonitorInterval: 1}, [2]string{}, "want at least 10ms"},
		{"monitor off", Config{MemoryMonitorInterval: -1}, [2]string{}, ""},
		{"bad env threshold", Config{}, [2]string{EnvMemoryUsageThreshold, "high"}, EnvMemoryUsageThreshold},
		{"bad env limit", Config{}, [2]string{EnvMemoryLimit, "1GiB"}, EnvMemoryLimit},
		{"env interval", Config{}, [2]string{EnvMemoryMonitorInterval, "50ms"}, ""},
	} {
		t.Run(tt.name, func(t *testing.T) {
			if tt.env[0] != "" {
				t.Setenv(tt.env[0], tt.env[1])
			}
			err := tt.cfg.Validate()
			switch {
			case tt.want == "" && err != nil:
				t.Fatalf("Validate: got %v, want nil", err)
			case tt.want != "" && (err == nil || !strings.Contains(err.Error(), tt.want)):
				t.Fatalf("Validate: got %v, want an error mentioning %q", err, tt.want)
			}
		})
	}
	t.Setenv(EnvMemoryMonitorInterval, "50ms")
	t.Setenv(EnvMemoryLimit, "123")
	if c := (Config{}).withDefaults(); c.MemoryMonitorInterval.Milliseconds() != 50 || c.MemoryLimit != 123 {
		t.Fatalf("from the environment: got %s, %d, want 50ms, 123", c.MemoryMonitorInterval, c.MemoryLimit)
	}
}

// sigkilled is the state of a real process that died of SIGKILL.
func sigkilled(t *testing.T) *os.ProcessState {
	t.Helper()
	cmd := exec.Command("sleep", "60")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	if err := cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	_ = cmd.Wait()
	return cmd.ProcessState
}

func TestKernelOOMClassification(t *testing.T) {
	f := newMonitorFixture(t, Config{MemoryUsageThreshold: 1, MemoryMonitorInterval: -1})
	f.mem.nm = nodeMemory{used: 99, total: 100, source: "system"}
	l := f.lease("hog", false, 100)
	w := l.worker
	killed := sigkilled(t)
	exited := exec.Command("false")
	_ = exited.Run()

	w.oomBase = 3
	f.mem.kills = 3
	if c := f.mon.kernelOOM(w, killed); c != nil {
		t.Fatalf("SIGKILL with no new kernel OOM kill: got %v, want nil (a plain crash)", c)
	}
	f.mem.kills = 4
	if c := f.mon.kernelOOM(w, exited.ProcessState); c != nil {
		t.Fatalf("exit status 1: got %v, want nil", c)
	}
	c := f.mon.kernelOOM(w, killed)
	if c == nil || !errors.Is(c, errs.ErrOutOfMemory) {
		t.Fatalf("SIGKILL while the OOM kill count rose: got %v, want ErrOutOfMemory", c)
	}
	for _, s := range []string{"kernel's OOM killer", "from 3 to 4", "99 B of 100 B", f.leases.self.String()} {
		if !strings.Contains(c.Error(), s) {
			t.Errorf("cause %q: want it to mention %q", c.Error(), s)
		}
	}
	w.oomBase = -1
	if c := f.mon.kernelOOM(w, killed); c != nil {
		t.Fatalf("unknown count at start: got %v, want nil", c)
	}

	// With the monitor sampling the count, an OOM kill long before the
	// death (another process's) does not make it one.
	t0 := time.Now()
	for i, n := range []uint64{3, 3, 4, 4, 4} {
		f.mem.kills = n
		f.mon.sample(t0.Add(time.Duration(i) * time.Second))
	}
	if got := f.mon.oomBaseline(3, t0.Add(4*time.Second)); got != 4 {
		t.Fatalf("baseline of a death at t0+4s: got %d, want 4 (the count at t0+2s)", got)
	}
	if got := f.mon.oomBaseline(3, t0.Add(2500*time.Millisecond)); got != 3 {
		t.Fatalf("baseline of a death at t0+2.5s: got %d, want 3 (the count at t0)", got)
	}
	if got := f.mon.oomBaseline(5, t0.Add(4*time.Second)); got != 5 {
		t.Fatalf("baseline with a later start: got %d, want 5", got)
	}
	if n := len(f.mon.samples); n != 3 {
		t.Fatalf("samples kept: got %d, want 3 (one older than the window)", n)
	}
	w.oomBase = 3
	f.mem.kills = 4
	f.mon.samples = []oomSample{{time.Now().Add(-3 * time.Second), 4}}
	if c := f.mon.kernelOOM(w, killed); c != nil {
		t.Fatalf("SIGKILL with the count unchanged for the window: got %v, want nil", c)
	}
}

// TestProcMemory reads the real /proc, and cgroup files of both versions.
func TestProcMemory(t *testing.T) {
	m := newProcMemory("/proc", "/sys/fs/cgroup")
	nm, err := m.node()
	if err != nil || nm.total == 0 || nm.used > nm.total {
		t.Fatalf("node(): got %+v, %v, want used <= total > 0", nm, err)
	}
	if n, err := m.private(os.Getpid()); err != nil || n == 0 {
		t.Fatalf("private(self): got %d, %v, want > 0", n, err)
	}
	if _, err := m.private(1 << 30); err == nil {
		t.Fatal("private(no such pid): got nil error, want one")
	}
	if _, err := m.oomKills(); err != nil {
		t.Logf("oomKills: %v (kernel OOM kills are not told apart here)", err)
	}

	write := func(path, content string) {
		t.Helper()
		if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	for _, tt := range []struct {
		name, cgroupLine string
		files            map[string]string
		want             nodeMemory
	}{
		{"v1", "4:memory:/grp\n0::/\n", map[string]string{
			"memory/grp/memory.limit_in_bytes": "1000\n", "memory/grp/memory.usage_in_bytes": "900\n",
			"memory/grp/memory.stat": "cache 10\ntotal_inactive_file 100\n",
		}, nodeMemory{used: 800, total: 1000}},
		{"v2", "0::/grp\n", map[string]string{
			"grp/memory.max": "2000\n", "grp/memory.current": "1900\n", "grp/memory.stat": "anon 5\ninactive_file 300\n",
		}, nodeMemory{used: 1600, total: 2000}},
		{"v2 without a limit", "0::/grp\n", map[string]string{
			"grp/memory.max": "max\n", "grp/memory.current": "1900\n", "grp/memory.stat": "inactive_file 300\n",
		}, nodeMemory{used: 1 << 20, total: 4 << 20}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			proc, root := t.TempDir(), t.TempDir()
			write(filepath.Join(proc, "self", "cgroup"), tt.cgroupLine)
			write(filepath.Join(proc, "meminfo"), "MemTotal:       4096 kB\nMemFree: 1 kB\nMemAvailable:   3072 kB\n")
			for p, c := range tt.files {
				write(filepath.Join(root, p), c)
			}
			got, err := newProcMemory(proc, root).node()
			if err != nil {
				t.Fatal(err)
			}
			if got.used != tt.want.used || got.total != tt.want.total {
				t.Fatalf("node(): got %d of %d (%s), want %d of %d", got.used, got.total, got.source, tt.want.used, tt.want.total)
			}
		})
	}
}

// TestReturnLeaseSaysWhyTheWorkerDied: ReturnWorkerLease of a failed
// worker answers with its out-of-memory cause, whether the worker was gone
// before the holder returned the lease or exits while the raylet waits.
func TestReturnLeaseSaysWhyTheWorkerDied(t *testing.T) {
	f := newMonitorFixture(t, Config{MemoryUsageThreshold: 1, MemoryMonitorInterval: -1})
	r := &Raylet{leases: f.leases, pool: f.pool, log: slog.New(slog.NewTextHandler(io.Discard, nil))}
	cause := errs.New(errs.KindOutOfMemory, "", "killed for memory")
	ret := func(l *lease, failed bool) *errs.Error {
		t.Helper()
		resp, err := r.returnLease(t.Context(), &pb.ReturnWorkerLeaseRequest{LeaseId: l.id[:], WorkerFailed: failed})
		if err != nil {
			t.Fatalf("ReturnWorkerLease: %v", err)
		}
		return errs.FromProto(resp.GetWorkerDeath())
	}

	// Gone first: the cause was kept for the holder, once.
	gone := leaseFromPool(t, f.pool, f.leases, f.job, sched.Resources{"CPU": 1})
	f.pool.exited(gone.worker, "killed by signal killed (9)", cause)
	if got := ret(gone, true); got == nil || got.Message != cause.Message {
		t.Fatalf("return of a lease whose worker died of OOM: got %v, want %v", got, cause)
	}
	if got := ret(gone, true); got != nil {
		t.Fatalf("second return: got %v, want no cause", got)
	}

	// Still there: the raylet kills it (pid 0 here: nothing is sent) and
	// waits for its exit.
	live := leaseFromPool(t, f.pool, f.leases, f.job, sched.Resources{"CPU": 1})
	if !f.pool.killForMemory(live.worker, cause) {
		t.Fatal("killForMemory: got false, want true")
	}
	go f.exit(live.worker)
	if got := ret(live, true); got == nil || got.Message != cause.Message {
		t.Fatalf("return of a lease whose worker the monitor is killing: got %v, want %v", got, cause)
	}

	// A plain crash, or a lease returned in good health, has no cause.
	crashed := leaseFromPool(t, f.pool, f.leases, f.job, sched.Resources{"CPU": 1})
	f.pool.exited(crashed.worker, "exit status 2", nil)
	if got := ret(crashed, true); got != nil {
		t.Fatalf("return of a lease whose worker crashed: got %v, want no cause", got)
	}
	healthy := leaseFromPool(t, f.pool, f.leases, f.job, sched.Resources{"CPU": 1})
	if got := ret(healthy, false); got != nil {
		t.Fatalf("return of a healthy lease: got %v, want no cause", got)
	}
}
