package core

import pb "github.com/goray/goray/proto/goray/v1"

// The SDK's options are opaque: actor.Option, task.Option and
// runtime.SchedulingOption are interfaces whose only methods are these, which
// name types of this internal package, so a public signature shows no
// internal type and no code outside this module can implement an option.

// ActorOption is an option of actor.Spawn, actor.SpawnName and actor.Get.
type ActorOption interface{ ApplyActor(*ActorOptions) }

// TaskOption is an option of a task's Remote.
type TaskOption interface{ ApplyTask(*TaskOptions) }

// ActorOptionFunc is an ActorOption that sets fields of ActorOptions.
type ActorOptionFunc func(*ActorOptions)

// ApplyActor calls f.
func (f ActorOptionFunc) ApplyActor(o *ActorOptions) { f(o) }

// TaskOptionFunc is a TaskOption that sets fields of TaskOptions.
type TaskOptionFunc func(*TaskOptions)

// ApplyTask calls f.
func (f TaskOptionFunc) ApplyTask(o *TaskOptions) { f(o) }

// PlacementOption is an option that actors and tasks share: it sets the same
// placement fields (resources, strategy, fail-fast) on either.
type PlacementOption func(*Placement)

// Placement is what an actor's and a task's options have in common.
type Placement struct {
	Resources map[string]float64
	Strategy  *pb.SchedulingStrategy // nil: the default strategy
	FailFast  bool
}

// ApplyActor sets the placement fields of an actor's options.
func (f PlacementOption) ApplyActor(o *ActorOptions) {
	p := Placement{o.Resources, o.Strategy, o.FailFast}
	f(&p)
	o.Resources, o.Strategy, o.FailFast = p.Resources, p.Strategy, p.FailFast
}

// ApplyTask sets the placement fields of a task's options.
func (f PlacementOption) ApplyTask(o *TaskOptions) {
	p := Placement{o.Resources, o.Strategy, o.FailFast}
	f(&p)
	o.Resources, o.Strategy, o.FailFast = p.Resources, p.Strategy, p.FailFast
}

// CancelOptions shape a cancel (task.Cancel).
type CancelOptions struct {
	// Force kills the task's worker process (tasks only).
	Force bool
	// Recursive also cancels the calls the cancelled call submitted.
	Recursive bool
}

// CancelOption is an option of task.Cancel.
type CancelOption interface{ ApplyCancel(*CancelOptions) }

// CancelOptionFunc is a CancelOption that sets fields of CancelOptions.
type CancelOptionFunc func(*CancelOptions)

// ApplyCancel calls f.
func (f CancelOptionFunc) ApplyCancel(o *CancelOptions) { f(o) }
