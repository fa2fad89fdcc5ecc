// Package bench is goray's benchmark program (`goray bench`, like Ray's
// `ray microbenchmark`): Ray's microbenchmark workloads under Ray's metric
// names, and in the same run the transport's own limits on this machine
// (gRPC between two processes on loopback, memcpy), so that every figure is
// also a ratio to its physical limit. The workloads and the bar are those of
// BENCHMARKS.md; docs/benchmarks.md has the latest figures.
//
// The goray binary is the benchmark's job binary: raylets start worker
// processes from it, so the actor types and task functions used here are
// registered at package level, and the binary's main must call
// runtime.ServeIfWorker first thing. It is also re-executed in hidden child
// modes (ChildMain): the gRPC echo server of the baselines and the two raylet
// processes of the default embedded cluster.
package bench

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"regexp"
	"runtime/pprof"
	"time"
)

// Units of a figure.
const (
	UnitOps = "ops/s"
	UnitGB  = "GB/s"
)

// gb is a gigabyte as Ray's microbenchmark counts it (10^9 bytes).
const gb = 1e9

// Config configures one benchmark run.
type Config struct {
	// Address of an existing cluster's head raylet. Empty: start an embedded
	// cluster of two raylet processes on loopback.
	Address string
	// Token of the cluster at Address. Default: as runtime.Init resolves it.
	Token string
	// Quick runs one short trial of each metric with small sizes (CI smoke).
	Quick bool
	// Run selects the metrics (baselines included) whose name matches it.
	// Empty: all.
	Run string
	// JSON writes the results as JSON instead of a table.
	JSON bool
	// CPUProfile, when set, is where the driver's CPU profile of the run is
	// written.
	CPUProfile string
	// Scale adds the scale workloads (many_actors, many_tasks_queued,
	// many_pgs: Ray's release tests, see scale.go), which are left out of a
	// run unless Scale is set or Run names them.
	Scale bool
	// Out receives the results (default os.Stdout); Progress the progress
	// lines (default os.Stderr).
	Out, Progress io.Writer
	// Exe is the binary re-executed for child processes and as the job's
	// binary. Default os.Executable().
	Exe string
}

// Validate checks the config and fills defaults.
func (c *Config) Validate() error {
	if c.Run != "" {
		if _, err := regexp.Compile(c.Run); err != nil {
			return fmt.Errorf("bench: -run %q: %w", c.Run, err)
		}
	}
	if c.Out == nil {
		c.Out = os.Stdout
	}
	if c.Progress == nil {
		c.Progress = os.Stderr
	}
	if c.Exe == "" {
		exe, err := os.Executable()
		if err != nil {
			return fmt.Errorf("bench: find this binary: %w", err)
		}
		c.Exe = exe
	}
	return nil
}

// Result is one metric of a run (one JSON object of `goray bench -json`).
type Result struct {
	Name string `json:"name"`
	// Value is the mean over the trials; 0 when the metric is unavailable.
	Value float64 `json:"value"`
	Unit  string  `json:"unit"`
	// Std is the standard deviation over the trials.
	Std float64 `json:"std"`
	// Baseline names the metric Value is compared with; empty for the
	// baselines themselves and for the in-process put/get calls.
	Baseline string `json:"baseline"`
	// Ratio is Value / the baseline's value in this run (0 without one).
	Ratio float64 `json:"ratio"`
	// Goal is the bar of BENCHMARKS.md for this metric, if any.
	Goal string `json:"goal,omitempty"`
	// Ray is Ray 2.21's published figure (0: none).
	Ray float64 `json:"ray,omitempty"`
	// Trials holds each trial's figure.
	Trials []float64 `json:"trials,omitempty"`
	// Note explains an unavailable metric or a deviation from Ray's workload.
	Note string `json:"note,omitempty"`
	// Seconds is how long a one-shot scale workload took.
	Seconds float64 `json:"seconds,omitempty"`
	// PeakRSSBytes is a scale workload's peak memory (VmHWM) summed over
	// every goray process of the run.
	PeakRSSBytes int64 `json:"peak_rss_bytes,omitempty"`
}

// Available reports whether the metric was measured.
func (r Result) Available() bool { return r.Value > 0 }

// errUnavailable marks a workload that cannot run on this build or cluster.
type errUnavailable struct{ why string }

func (e errUnavailable) Error() string { return "unavailable: " + e.why }

func unavailable(format string, args ...any) error {
	return errUnavailable{fmt.Sprintf(format, args...)}
}

// Run runs the benchmark and writes its results.
func Run(ctx context.Context, cfg Config) ([]Result, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	var sel *regexp.Regexp
	if cfg.Run != "" {
		sel = regexp.MustCompile(cfg.Run)
	}
	if cfg.CPUProfile != "" {
		f, err := os.Create(cfg.CPUProfile)
		if err != nil {
			return nil, fmt.Errorf("bench: -cpuprofile: %w", err)
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			return nil, fmt.Errorf("bench: -cpuprofile: %w", err)
		}
		defer pprof.StopCPUProfile()
	}
	r := &runner{cfg: cfg, timing: standardTiming}
	if cfg.Quick {
		r.timing = quickTiming
	}
	r.sizes = fullSizes
	if cfg.Quick {
		r.sizes = quickSizes
	}
	scaleSz := fullScale
	if cfg.Quick {
		scaleSz = quickScale
	}
	var specs []*spec
	for _, s := range append(append(baselineSpecs(r.sizes), workloadSpecs(r.sizes)...), scaleSpecs(scaleSz)...) {
		switch {
		case s.scale && cfg.Scale && sel == nil:
			specs = append(specs, s)
		case s.scale && sel == nil:
			// Opt-in: -scale or a -run that names it.
		case sel == nil || sel.MatchString(s.name):
			specs = append(specs, s)
		}
	}
	if len(specs) == 0 {
		return nil, fmt.Errorf("bench: -run %q matches no metric", cfg.Run)
	}
	// A ratio needs its baseline in the same run.
	need := map[string]bool{}
	for _, s := range specs {
		if s.baseline != "" {
			need[s.baseline] = true
		}
		for _, b := range s.slowerOf {
			need[b] = true
		}
	}
	for _, b := range baselineSpecs(r.sizes) {
		if need[b.name] && !containsSpec(specs, b.name) {
			specs = append([]*spec{b}, specs...)
		}
	}
	specs = pairBaselines(specs)
	defer r.close()
	results := make([]Result, 0, len(specs))
	byName := map[string]*Result{}
	for i := 0; i < len(specs); i++ {
		s := specs[i]
		if err := ctx.Err(); err != nil {
			return results, err
		}
		if i+1 < len(specs) && pairable(s, specs[i+1]) {
			// A baseline and its metric, trials alternating (measurePair).
			r.progress("[%d-%d/%d] %s and %s, trials alternating", i+1, i+2, len(specs), s.name, specs[i+1].name)
			b, m := r.measurePair(ctx, s, specs[i+1])
			results = append(results, b)
			byName[s.name] = &results[len(results)-1]
			results = append(results, m)
			byName[m.Name] = &results[len(results)-1]
			i++
			continue
		}
		r.progress("[%d/%d] %s", i+1, len(specs), s.name)
		res := r.measure(ctx, s)
		results = append(results, res)
		byName[s.name] = &results[len(results)-1]
	}
	for i, s := range specs {
		if len(s.slowerOf) > 0 {
			results[i].Baseline = slowerBaseline(byName, s.slowerOf, s.baseline)
		}
	}
	for i := range results {
		res := &results[i]
		if b := byName[res.Baseline]; b != nil && b.Value > 0 && res.Value > 0 {
			res.Ratio = res.Value / b.Value
		}
	}
	var err error
	if cfg.JSON {
		err = writeJSON(cfg.Out, results)
	} else {
		err = writeTable(cfg.Out, results, cfg)
	}
	return results, err
}

// slowerBaseline is the name of the slowest measured baseline of names
// (def when none was measured).
func slowerBaseline(byName map[string]*Result, names []string, def string) string {
	best := def
	for _, n := range names {
		if b := byName[n]; b != nil && b.Value > 0 && (byName[best] == nil || byName[best].Value <= 0 || b.Value < byName[best].Value) {
			best = n
		}
	}
	return best
}

// pairBaselines moves each baseline marked adjacent to just before the
// first metric measured against it, so that the two run back to back and
// their ratio holds on a machine whose load changes during the run.
func pairBaselines(specs []*spec) []*spec {
	out := make([]*spec, 0, len(specs))
	placed := map[string]bool{}
	byName := map[string]*spec{}
	for _, s := range specs {
		byName[s.name] = s
	}
	for _, s := range specs {
		if s.adjacent && !placed[s.name] {
			used := false
			for _, d := range specs {
				used = used || d.baseline == s.name
			}
			if used {
				continue // placed before its first dependent
			}
		}
		if b := byName[s.baseline]; b != nil && b.adjacent && !placed[b.name] {
			out = append(out, b)
			placed[b.name] = true
		}
		if !placed[s.name] {
			out = append(out, s)
			placed[s.name] = true
		}
	}
	return out
}

func containsSpec(specs []*spec, name string) bool {
	for _, s := range specs {
		if s.name == name {
			return true
		}
	}
	return false
}

// timing is Ray's timeit: a warm-up, then trials of at least a duration.
type timing struct {
	warmup time.Duration
	trial  time.Duration
	trials int
}

var (
	standardTiming = timing{warmup: time.Second, trial: 2 * time.Second, trials: 4}
	quickTiming    = timing{warmup: 100 * time.Millisecond, trial: 500 * time.Millisecond, trials: 1}
)

// stopwatch measures the time of a trial, without the pauses an operation
// takes to prepare what must not be timed.
type stopwatch struct {
	start    time.Time
	paused   time.Duration
	pausedAt time.Time
}

func newStopwatch() *stopwatch { return &stopwatch{start: time.Now()} }

// Pause stops the clock until Resume.
func (w *stopwatch) Pause() { w.pausedAt = time.Now() }

// Resume restarts the clock.
func (w *stopwatch) Resume() {
	if !w.pausedAt.IsZero() {
		w.paused += time.Since(w.pausedAt)
		w.pausedAt = time.Time{}
	}
}

func (w *stopwatch) elapsed() time.Duration { return time.Since(w.start) - w.paused }

// op is one operation of a workload; it may pause the stopwatch around work
// that is not part of what the metric measures.
type op func(ctx context.Context, w *stopwatch) error

// spec is one metric: how to set it up and what one operation is.
type spec struct {
	name string
	unit string
	// per is what one operation counts for: operations, or gigabytes.
	per      float64
	baseline string
	// slowerOf, when set, names baselines (baseline among them) of which
	// the ratio takes the slower one measured in the run.
	slowerOf []string
	goal     string
	ray      float64
	note     string
	// freshPerTrial sets the workload up again (in a fresh job) before each
	// trial: for workloads whose objects would otherwise pile up, since
	// goray frees a job's objects only when the job ends.
	freshPerTrial bool
	// setup prepares the workload and returns its operation and a cleanup.
	setup func(ctx context.Context, r *runner) (op, func(), error)
	// scale marks an opt-in scale workload (Config.Scale).
	scale bool
	// adjacent (a baseline) runs just before the first metric measured
	// against it rather than with the other baselines (pairBaselines).
	adjacent bool
	// once, instead of setup, runs a one-shot workload (no warm-up or
	// trials) and says what it measured.
	once func(ctx context.Context, r *runner) (scaleResult, error)
}

func (r *runner) measure(ctx context.Context, s *spec) Result {
	res := Result{Name: s.name, Unit: s.unit, Baseline: s.baseline, Goal: s.goal, Ray: s.ray, Note: s.note}
	if s.once != nil {
		return r.measureOnce(ctx, s, res)
	}
	fail := func(err error) Result {
		var u errUnavailable
		if errors.As(err, &u) {
			res.Note = err.Error()
		} else {
			res.Note = "error: " + err.Error()
		}
		res.Value, res.Std, res.Trials = 0, 0, nil
		r.progress("    %s", res.Note)
		return res
	}
	var (
		fn      op
		cleanup func()
	)
	setup := func() error {
		if cleanup != nil {
			cleanup()
			cleanup = nil
		}
		var err error
		fn, cleanup, err = s.setup(ctx, r)
		return err
	}
	defer func() {
		if cleanup != nil {
			cleanup()
		}
	}()
	if err := setup(); err != nil {
		return fail(err)
	}
	// Warm up, and learn how many operations to run between clock checks.
	r.progress("    warm-up %v", r.timing.warmup)
	w := newStopwatch()
	count := 0
	for w.elapsed() < r.timing.warmup {
		if err := fn(ctx, w); err != nil {
			return fail(err)
		}
		count++
	}
	step := count/10 + 1
	for t := 0; t < r.timing.trials; t++ {
		if s.freshPerTrial && t > 0 {
			if err := setup(); err != nil {
				return fail(err)
			}
		}
		w := newStopwatch()
		n := 0
		for w.elapsed() < r.timing.trial {
			for range step {
				if err := fn(ctx, w); err != nil {
					return fail(err)
				}
			}
			n += step
		}
		v := s.per * float64(n) / w.elapsed().Seconds()
		res.Trials = append(res.Trials, v)
		r.progress("    trial %d/%d: %s %s", t+1, r.timing.trials, human(v), s.unit)
	}
	res.Value, res.Std = meanStd(res.Trials)
	return res
}

func meanStd(xs []float64) (mean, std float64) {
	for _, x := range xs {
		mean += x
	}
	mean /= float64(len(xs))
	for _, x := range xs {
		std += (x - mean) * (x - mean)
	}
	return mean, math.Sqrt(std / float64(len(xs)))
}

func (r *runner) progress(format string, args ...any) {
	fmt.Fprintf(r.cfg.Progress, "bench: "+format+"\n", args...)
}
