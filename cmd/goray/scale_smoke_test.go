package main

import (
	"bytes"
	"context"
	"encoding/json"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/goray/goray/internal/bench"
)

// TestBenchScaleSmoke runs the opt-in scale workloads at their -quick sizes
// (`goray bench -quick -run '^many_' -json`): each must report a rate, its
// duration and the peak memory of the run's processes. They must stay out
// of a run that does not ask for them.
func TestBenchScaleSmoke(t *testing.T) {
	if raceEnabled {
		t.Skip("run by .ci/run's bench smoke step, without -race (the workloads run in a non-race build)")
	}
	if testing.Short() {
		t.Skip("starts a cluster and runs the scale workloads")
	}
	bin := filepath.Join(t.TempDir(), "goray")
	if out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 3*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, "bench", "-quick", "-json", "-run", "^many_")
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("goray bench: %v\nstderr:\n%s", err, stderr.String())
	}
	var results []bench.Result
	if err := json.Unmarshal(stdout.Bytes(), &results); err != nil {
		t.Fatalf("output is not a JSON array of results: %v\n%s", err, stdout.String())
	}
	seen := map[string]bool{}
	for _, r := range results {
		seen[r.Name] = true
		if !(r.Value > 0) || !(r.Seconds > 0) || r.PeakRSSBytes <= 0 {
			t.Errorf("%s: value %v, %v s, peak %d bytes (note %q): want all positive", r.Name, r.Value, r.Seconds, r.PeakRSSBytes, r.Note)
		}
	}
	for _, name := range []string{"many_actors", "many_tasks_queued", "many_pgs"} {
		if !seen[name] {
			t.Errorf("%s missing from the output", name)
		}
	}
	if t.Failed() {
		t.Logf("stderr:\n%s", stderr.String())
	}
}
