package raylet

import (
	"cmp"
	"context"
	"fmt"
	"log/slog"
	"os"
	"slices"
	"sync"
	"syscall"
	"time"

	"github.com/goray/goray/internal/errs"
	"github.com/goray/goray/internal/ids"
)

// memoryMonitor is the node's memory monitor (Ray's MemoryMonitor with its
// worker killing policy): every interval it reads the node's memory use and
// its workers' private memory, and when the node is past its threshold (a
// fraction of the node's memory) or its workers past the absolute limit, it
// kills one worker before the kernel's OOM killer has to — the newest lease
// whose tasks are retried first — and kills no other until that one's
// process exited. The killed worker's lease holder learns why
// (ErrOutOfMemory) when it returns the lease. It also tells a worker the
// kernel's OOM killer killed from a bare crash (kernelOOM).
//
// Its goroutine (run, owned by the raylet) calls check; the workers' wait
// goroutines call kernelOOM and launches call oomKills. Only run's
// goroutine touches victim and quiet; the rest is set at construction.
type memoryMonitor struct {
	node      ids.NodeID
	threshold float64 // fraction of the node's memory; >= 1: no such check
	limit     uint64  // bytes of the workers' summed private memory; 0: none
	interval  time.Duration
	mem       memorySource
	pool      *workerPool
	log       *slog.Logger
	kill      func(*worker) // (*worker).kill; a recorder in tests

	// victim is the worker killed last, until its process is gone.
	victim *worker
	// quiet is set once "nothing to kill" was logged, until usage is under
	// the bounds again.
	quiet bool

	// samples are the kernel's OOM kill count as run read it, the last
	// maxOOMSamples, oldest first (kernelOOM compares a death with the
	// count shortly before it). Guarded by samplesMu.
	samplesMu sync.Mutex
	samples   []oomSample
}

// oomSample is the kernel's OOM kill count at a time.
type oomSample struct {
	at time.Time
	n  int64
}

// oomWindow is how long before a worker's death an OOM kill may have
// happened to count as the cause of that death (when run samples the
// count): the kernel kills, then the raylet reaps, within it.
const oomWindow = 2 * time.Second

// maxOOMSamples bounds memoryMonitor.samples.
const maxOOMSamples = 64

func newMemoryMonitor(node ids.NodeID, cfg Config, mem memorySource, pool *workerPool, log *slog.Logger) *memoryMonitor {
	return &memoryMonitor{
		node: node, threshold: cfg.MemoryUsageThreshold, limit: uint64(max(cfg.MemoryLimit, 0)),
		interval: cfg.MemoryMonitorInterval, mem: mem, pool: pool, log: log, kill: (*worker).kill,
	}
}

// enabled says whether run has anything to watch.
func (m *memoryMonitor) enabled() bool {
	return m.interval > 0 && (m.threshold < 1 || m.limit > 0)
}

// run checks every interval until ctx ends.
func (m *memoryMonitor) run(ctx context.Context) {
	t := time.NewTicker(m.interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		m.sample(time.Now())
		m.check()
	}
}

// sample records the kernel's OOM kill count at now, keeping the samples
// that cover a little more than oomWindow.
func (m *memoryMonitor) sample(now time.Time) {
	n := m.oomKills()
	if n < 0 {
		return
	}
	m.samplesMu.Lock()
	defer m.samplesMu.Unlock()
	m.samples = append(m.samples, oomSample{now, n})
	// Keep one sample older than the window, and at most maxOOMSamples.
	for len(m.samples) > 1 && (len(m.samples) > maxOOMSamples || now.Sub(m.samples[1].at) >= oomWindow) {
		m.samples = m.samples[1:]
	}
}

// oomBaseline is the OOM kill count to compare a death at now with: the
// count when the worker started (base), or, when later, the last sample
// taken oomWindow or more before now.
func (m *memoryMonitor) oomBaseline(base int64, now time.Time) int64 {
	m.samplesMu.Lock()
	defer m.samplesMu.Unlock()
	for i := len(m.samples) - 1; i >= 0; i-- {
		if s := m.samples[i]; now.Sub(s.at) >= oomWindow {
			return max(base, s.n)
		}
	}
	return base
}

// check kills one worker when the node uses too much memory, and says
// which (nil when none).
func (m *memoryMonitor) check() *worker {
	if m.victim != nil {
		select {
		case <-m.victim.exited:
			m.victim = nil
		default:
			return nil // one at a time: its memory is not back yet
		}
	}
	cands := m.pool.memoryCandidates()
	var sum uint64
	measured := false
	measure := func() {
		for i := range cands {
			cands[i].rss, _ = m.mem.private(cands[i].pid) // 0 when it just exited
			sum += cands[i].rss
		}
		measured = true
	}
	over := ""
	if m.limit > 0 {
		measure()
	}
	if m.limit > 0 && sum > m.limit {
		over = fmt.Sprintf("its workers used %s of private memory (summed RSS of %d processes), over the limit of %s (memory limit)",
			fmtBytes(sum), len(cands), fmtBytes(m.limit))
	}
	if over == "" && m.threshold < 1 {
		nm, err := m.mem.node()
		if err == nil && nm.fraction() > m.threshold {
			over = fmt.Sprintf("its memory use %s of %s (%.1f%%, %s) is over the threshold of %.0f%% (memory usage threshold)",
				fmtBytes(nm.used), fmtBytes(nm.total), 100*nm.fraction(), nm.source, 100*m.threshold)
		}
	}
	if over == "" {
		m.quiet = false
		return nil
	}
	if !measured {
		measure()
	}
	v, ok := pickVictim(cands)
	if !ok {
		if !m.quiet {
			m.log.Warn("memory monitor: the node is over its memory bounds but runs no worker it could kill", "node", m.node, "usage", over)
			m.quiet = true
		}
		return nil
	}
	what := "an idle task worker"
	switch {
	case v.leased && v.retriable:
		what = "the newest lease of retriable tasks"
	case v.leased:
		what = "the newest lease, of tasks that are not retried"
	case v.kind == kindActorHost:
		what = fmt.Sprintf("the actor host using the most memory (%d actors)", v.actors)
	}
	cause := errs.New(errs.KindOutOfMemory, "",
		"the memory monitor of node %s killed worker process (pid %d) of job %s, %s: %s; this worker used %s. "+
			"Use less memory per task, or run fewer at once (ask for more of the \"memory\" resource), or raise the node's bound (raylet --memory-limit, --memory-usage-threshold)",
		m.node, v.pid, v.job, what, over, fmtBytes(v.rss))
	cause.NodeID, cause.WorkerID, cause.PID = m.node[:], v.w.id[:], int32(v.pid)
	if !m.pool.killForMemory(v.w, cause) {
		return nil
	}
	m.log.Warn("memory monitor: killing a worker", "node", m.node, "worker", v.w.id, "pid", v.pid, "job", v.job,
		"victim", what, "lease_function", v.function, "usage", over, "worker_private_bytes", v.rss)
	m.kill(v.w)
	m.victim = v.w
	m.quiet = false
	return v.w
}

// pickVictim is the worker to kill (Ray's policy, simplified): the newest
// lease whose tasks are retried, else the newest lease, else the idle task
// worker using the most memory, else the actor host using the most.
func pickVictim(cands []memCandidate) (memCandidate, bool) {
	rank := func(c memCandidate) int {
		switch {
		case c.leased && c.retriable:
			return 0
		case c.leased:
			return 1
		case c.kind == kindTask:
			return 2
		default:
			return 3
		}
	}
	if len(cands) == 0 {
		return memCandidate{}, false
	}
	return slices.MinFunc(cands, func(a, b memCandidate) int {
		if c := cmp.Compare(rank(a), rank(b)); c != 0 {
			return c
		}
		if a.leased {
			return cmp.Compare(b.leaseSeq, a.leaseSeq) // newest first
		}
		return cmp.Compare(b.rss, a.rss) // most memory first
	}), true
}

// oomKills is the kernel's OOM kill count, -1 when unknown.
func (m *memoryMonitor) oomKills() int64 {
	n, err := m.mem.oomKills()
	if err != nil {
		return -1
	}
	return int64(n)
}

// kernelOOM is the cause of w's death when the kernel's OOM killer killed
// it: its process died of SIGKILL (which the raylet did not send for memory)
// while the kernel's OOM kill count rose — since it started, and (while the
// monitor runs and samples the count) within oomWindow before its death.
// That is a heuristic: another process killed for memory just then, with
// this one SIGKILLed by someone else, would look the same.
func (m *memoryMonitor) kernelOOM(w *worker, st *os.ProcessState) *errs.Error {
	if st == nil || w.oomBase < 0 {
		return nil
	}
	ws, ok := st.Sys().(syscall.WaitStatus)
	if !ok || !ws.Signaled() || ws.Signal() != syscall.SIGKILL {
		return nil
	}
	base := m.oomBaseline(w.oomBase, time.Now())
	now := m.oomKills()
	if now <= base {
		return nil
	}
	figures := ""
	if nm, err := m.mem.node(); err == nil {
		figures = fmt.Sprintf("; the node's memory use is now %s of %s (%.1f%%, %s)", fmtBytes(nm.used), fmtBytes(nm.total), 100*nm.fraction(), nm.source)
	}
	cause := errs.New(errs.KindOutOfMemory, "",
		"the kernel's OOM killer killed worker process (pid %d) of job %s on node %s (it died of SIGKILL while the kernel's oom_kill count rose from %d to %d)%s. "+
			"Use less memory per task, or run fewer at once (ask for more of the \"memory\" resource); the raylet's memory monitor (--memory-usage-threshold, --memory-limit) kills workers before the kernel must",
		w.pid, w.job.id, m.node, base, now, figures)
	cause.NodeID, cause.WorkerID, cause.PID = m.node[:], w.id[:], int32(w.pid)
	cause.Cause = "killed by signal killed (9)"
	return cause
}
