package runtime

import (
	"maps"
	"testing"

	"github.com/goray/goray/internal/core"
	pb "github.com/goray/goray/proto/goray/v1"
)

// TestSchedulingOptionsApplyToActorsAndTasks checks that each shared option
// sets the same thing on an actor's options and on a task's.
func TestSchedulingOptionsApplyToActorsAndTasks(t *testing.T) {
	res := map[string]float64{"CPU": 2, "GPU": 1}
	opts := []SchedulingOption{WithDemand(res), WithStrategy(SpreadStrategy()), WithFailFast()}
	var a core.ActorOptions
	var tk core.TaskOptions
	for _, o := range opts {
		o.ApplyActor(&a)
		o.ApplyTask(&tk)
	}
	for _, c := range []struct {
		what     string
		res      map[string]float64
		strategy *pb.SchedulingStrategy
		failFast bool
	}{
		{"actor", a.Resources, a.Strategy, a.FailFast},
		{"task", tk.Resources, tk.Strategy, tk.FailFast},
	} {
		if !maps.Equal(c.res, res) {
			t.Errorf("%s resources: got %v, want %v", c.what, c.res, res)
		}
		if got := c.strategy.GetKind(); got != pb.SchedulingStrategy_KIND_SPREAD {
			t.Errorf("%s strategy: got %v, want %v", c.what, got, pb.SchedulingStrategy_KIND_SPREAD)
		}
		if !c.failFast {
			t.Errorf("%s fail fast: got false, want true", c.what)
		}
	}
	// The default strategy leaves the strategy unset, so the head's default
	// applies.
	var d core.TaskOptions
	WithStrategy(DefaultStrategy()).ApplyTask(&d)
	if d.Strategy != nil {
		t.Errorf("default strategy: got %v, want nil", d.Strategy)
	}
}
