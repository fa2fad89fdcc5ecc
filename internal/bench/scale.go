package bench

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/goray/goray/actor"
	"github.com/goray/goray/objectstore"
	goray "github.com/goray/goray/runtime"
	"github.com/goray/goray/task"
)

// The scale workloads are Ray's release tests of the same names: one run
// each (no trials), long, so they are opt-in: `goray bench -scale` runs them
// all, and a -run that names one runs it. Each reports a rate and, beside
// it, the peak memory (VmHWM) summed over every goray process of the run:
// this driver and, on the embedded cluster, the raylet processes and every
// worker process they started. Against an existing cluster (-address) only
// the driver's own memory is visible.
const (
	scaleManyActors      = "many_actors"
	scaleManyTasksQueued = "many_tasks_queued"
	scaleManyPGs         = "many_pgs"
)

// scaleSizes are the sizes of the scale workloads.
type scaleSizes struct {
	actors   int // many_actors: actors spawned, then called once each
	spawners int // many_actors: goroutines spawning concurrently
	tasks    int // many_tasks_queued: no-op tasks submitted at once
	pgs      int // many_pgs: groups created
	bundles  int // many_pgs: bundles per group
}

var (
	fullScale  = scaleSizes{actors: 100_000, spawners: 256, tasks: 1_000_000, pgs: 1000, bundles: 3}
	quickScale = scaleSizes{actors: 2_000, spawners: 64, tasks: 20_000, pgs: 50, bundles: 3}
)

// ScaleActor is many_actors' actor: as Ray's, it holds nothing and answers
// one trivial method.
type ScaleActor struct{}

// Ping answers at once.
func (*ScaleActor) Ping(context.Context) (int, error) { return 1, nil }

var (
	scaleActorType = actor.Register("goray.bench.scale_actor", func() *ScaleActor { return &ScaleActor{} })
	scaleActorPing = actor.Method0(scaleActorType, "ping", (*ScaleActor).Ping)

	noopTask = task.Register0("goray.bench.noop", func(context.Context) (int, error) { return 0, nil })
)

// scaleResult is what one scale workload measured.
type scaleResult struct {
	count   float64       // actors, tasks or groups
	elapsed time.Duration // the timed part
	peakRSS int64         // bytes, summed over the goray processes (0: unknown)
	procs   int           // how many processes peakRSS sums
	detail  string        // phases and sizes, for the note
}

func scaleSpecs(sz scaleSizes) []*spec {
	return []*spec{
		{name: scaleManyActors, unit: UnitOps, per: 1, scale: true, ray: 550, goal: "< 60 s, < 4 GiB",
			note: fmt.Sprintf("actors/s: spawn %d actors from %d goroutines, then call each once", sz.actors, sz.spawners),
			once: func(ctx context.Context, r *runner) (scaleResult, error) { return manyActors(ctx, r, sz) }},
		{name: scaleManyTasksQueued, unit: UnitOps, per: 1, scale: true, ray: 1e6 / 184,
			note: fmt.Sprintf("tasks/s: submit %d no-op tasks at once, all on the driver's node, then get every result", sz.tasks),
			once: func(ctx context.Context, r *runner) (scaleResult, error) { return manyTasksQueued(ctx, r, sz) }},
		{name: scaleManyPGs, unit: UnitOps, per: 1, scale: true,
			note: fmt.Sprintf("groups/s: create %d PACK groups of %d {CPU: 0.001} bundles at once, wait for all", sz.pgs, sz.bundles),
			once: func(ctx context.Context, r *runner) (scaleResult, error) { return manyPGs(ctx, r, sz) }},
	}
}

// measureOnce runs a one-shot scale workload in a fresh job.
func (r *runner) measureOnce(ctx context.Context, s *spec, res Result) Result {
	sr, err := s.once(ctx, r)
	if err != nil {
		res.Note = "error: " + err.Error()
		r.progress("    %s", res.Note)
		return res
	}
	v := s.per * sr.count / sr.elapsed.Seconds()
	res.Value, res.Trials = v, []float64{v}
	res.Seconds = sr.elapsed.Seconds()
	res.PeakRSSBytes = sr.peakRSS
	mem := "peak memory unknown"
	if sr.peakRSS > 0 {
		mem = fmt.Sprintf("peak memory %.2f GiB over %d processes", float64(sr.peakRSS)/(1<<30), sr.procs)
	}
	res.Note = fmt.Sprintf("%s; one run: %.1f s, %s", s.note, sr.elapsed.Seconds(), mem)
	if sr.detail != "" {
		res.Note += "; " + sr.detail
	}
	r.progress("    %s %s in %.1f s (%s); %s", human(v), s.unit, sr.elapsed.Seconds(), sr.detail, mem)
	return res
}

// scaleProcs are the goray processes of a scale run: this process and its
// descendants (on the embedded cluster: the raylets and their workers).
func scaleProcs() []int {
	self := os.Getpid()
	children := map[int][]int{}
	entries, _ := os.ReadDir("/proc")
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile(filepath.Join("/proc", e.Name(), "stat"))
		if err != nil {
			continue
		}
		// pid (comm) state ppid ...: comm may hold spaces, so cut at the last ')'.
		i := bytes.LastIndexByte(b, ')')
		if i < 0 {
			continue
		}
		f := strings.Fields(string(b[i+1:]))
		if len(f) < 2 {
			continue
		}
		ppid, _ := strconv.Atoi(f[1])
		children[ppid] = append(children[ppid], pid)
	}
	out := []int{self}
	for i := 0; i < len(out); i++ {
		out = append(out, children[out[i]]...)
	}
	return out
}

// resetPeaks resets the peak RSS (VmHWM) of the processes, so that a
// workload's figure is its own and not an earlier one's.
func resetPeaks(pids []int) {
	for _, pid := range pids {
		_ = os.WriteFile(fmt.Sprintf("/proc/%d/clear_refs", pid), []byte("5"), 0)
	}
}

// peakRSS sums VmHWM over the processes.
func peakRSS(pids []int) (sum int64, n int) {
	for _, pid := range pids {
		f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
		if err != nil {
			continue
		}
		sc := bufio.NewScanner(f)
		for sc.Scan() {
			if v, ok := strings.CutPrefix(sc.Text(), "VmHWM:"); ok {
				kb, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
				if err == nil {
					sum += kb << 10
					n++
				}
				break
			}
		}
		f.Close()
	}
	return sum, n
}

// ticker logs progress every 10 s until stopped.
func (r *runner) ticker(what string, done *atomic.Int64, total int) func() {
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		t := time.NewTicker(10 * time.Second)
		defer t.Stop()
		start := time.Now()
		for {
			select {
			case <-stop:
				return
			case <-t.C:
				r.progress("    %s: %d/%d after %.0f s", what, done.Load(), total, time.Since(start).Seconds())
			}
		}
	}()
	return func() { close(stop); wg.Wait() }
}

// manyActors is Ray's many_actors: spawn the actors (concurrently, as Ray's
// driver submits creations asynchronously), then call each once.
func manyActors(ctx context.Context, r *runner, sz scaleSizes) (scaleResult, error) {
	end, err := r.job(ctx)
	if err != nil {
		return scaleResult{}, err
	}
	defer end()
	resetPeaks(scaleProcs())
	hs := make([]actor.Handle[ScaleActor], sz.actors)
	var next, spawned atomic.Int64
	var firstErr error
	var errOnce sync.Once
	sctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stopTicker := r.ticker("spawned", &spawned, sz.actors)
	start := time.Now()
	var wg sync.WaitGroup
	for range min(sz.spawners, sz.actors) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1) - 1)
				if i >= len(hs) || sctx.Err() != nil {
					return
				}
				h, err := actor.Spawn(sctx, scaleActorType)
				if err != nil {
					errOnce.Do(func() { firstErr = fmt.Errorf("spawn actor %d: %w", i, err); cancel() })
					return
				}
				hs[i] = h
				spawned.Add(1)
			}
		}()
	}
	wg.Wait()
	stopTicker()
	if firstErr != nil {
		return scaleResult{}, firstErr
	}
	spawnTime := time.Since(start)
	refs := make([]objectstore.Ref[int], len(hs))
	for i, h := range hs {
		refs[i] = scaleActorPing.Remote(ctx, h)
	}
	if err := getAll(ctx, refs); err != nil {
		return scaleResult{}, fmt.Errorf("call: %w", err)
	}
	elapsed := time.Since(start)
	peak, n := peakRSS(scaleProcs())
	return scaleResult{count: float64(sz.actors), elapsed: elapsed, peakRSS: peak, procs: n,
		detail: fmt.Sprintf("spawn %.1f s (%s actors/s), calls %.1f s", spawnTime.Seconds(),
			human(float64(sz.actors)/spawnTime.Seconds()), (elapsed - spawnTime).Seconds())}, nil
}

// manyTasksQueued is Ray's single-node many_tasks (1,000,000 queued tasks):
// every task is submitted before any result is read, pinned to the driver's
// node, so the queue holds nearly all of them at once.
func manyTasksQueued(ctx context.Context, r *runner, sz scaleSizes) (scaleResult, error) {
	end, err := r.job(ctx)
	if err != nil {
		return scaleResult{}, err
	}
	defer end()
	resetPeaks(scaleProcs())
	here := goray.NodeAffinity(goray.CurrentNodeID(), false)
	var got atomic.Int64
	start := time.Now()
	refs := make([]objectstore.Ref[int], sz.tasks)
	for i := range refs {
		refs[i] = noopTask.Remote(ctx, task.WithStrategy(here))
	}
	submitTime := time.Since(start)
	stopTicker := r.ticker("done", &got, sz.tasks)
	for _, ref := range refs {
		if _, err := ref.Get(ctx); err != nil {
			stopTicker()
			return scaleResult{}, err
		}
		got.Add(1)
	}
	stopTicker()
	elapsed := time.Since(start)
	peak, n := peakRSS(scaleProcs())
	return scaleResult{count: float64(sz.tasks), elapsed: elapsed, peakRSS: peak, procs: n,
		detail: fmt.Sprintf("submit %.1f s, drain %.1f s", submitTime.Seconds(), (elapsed - submitTime).Seconds())}, nil
}

// manyPGs is Ray's many_pgs: many placement groups of small bundles created
// at once and waited for; then they are removed (timed apart, in the note).
func manyPGs(ctx context.Context, r *runner, sz scaleSizes) (scaleResult, error) {
	end, err := r.job(ctx)
	if err != nil {
		return scaleResult{}, err
	}
	defer end()
	resetPeaks(scaleProcs())
	bundles := make([]map[string]float64, sz.bundles)
	for i := range bundles {
		bundles[i] = map[string]float64{"CPU": 0.001}
	}
	start := time.Now()
	pgs := make([]*goray.PlacementGroup, sz.pgs)
	for i := range pgs {
		if pgs[i], err = goray.CreatePlacementGroup(ctx, fmt.Sprintf("many-pgs-%d", i), goray.Pack, bundles...); err != nil {
			return scaleResult{}, err
		}
	}
	for _, pg := range pgs {
		wctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
		err := pg.Wait(wctx)
		cancel()
		if err != nil {
			return scaleResult{}, err
		}
	}
	elapsed := time.Since(start)
	rstart := time.Now()
	for _, pg := range pgs {
		if err := pg.Remove(ctx); err != nil {
			return scaleResult{}, err
		}
	}
	removal := time.Since(rstart)
	peak, n := peakRSS(scaleProcs())
	return scaleResult{count: float64(sz.pgs), elapsed: elapsed, peakRSS: peak, procs: n,
		detail: fmt.Sprintf("then removal of all %d: %.2f s (%s groups/s)", sz.pgs, removal.Seconds(),
			human(float64(sz.pgs)/removal.Seconds()))}, nil
}
