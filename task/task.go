// Package task runs stateless functions remotely.
//
// Register a function at package level under a stable name, then call it:
//
//	var square = task.Register1("square", func(ctx context.Context, x int) (int, error) {
//		return x * x, nil
//	})
//	...
//	ref := square.Remote(ctx, objectstore.Val(7)) // objectstore.Ref[int]
//	v, err := ref.Get(ctx)                        // 49
//
// The submitter leases a worker from its raylet (spilling to another node
// when this one cannot fit the task) and pushes the call straight to it,
// reusing the lease for further tasks of the same resource shape. Arguments
// may be refs: the task runs once they exist, and sees their values.
//
// The ctx a call is submitted with governs it: when ctx ends before the call
// finished, the call is cancelled (its function's ctx is done, its ref fails
// with runtime.ErrCancelled). Cancel cancels a call by its ref.
package task

import (
	"context"
	"reflect"

	"github.com/goray/goray/internal/core"
	"github.com/goray/goray/objectstore"
	"github.com/goray/goray/runtime"
)

// Option configures one remote call. Options are opaque: make them with the
// WithX functions of this package, or with the options tasks share with
// actors (runtime.WithDemand, runtime.WithStrategy, runtime.WithFailFast),
// which are Options too.
type Option interface{ taskOption }

type taskOption = core.TaskOption

// opt makes an Option from a function that sets task options.
func opt(f func(*core.TaskOptions)) Option { return core.TaskOptionFunc(f) }

// WithResources is runtime.WithDemand, kept under the name tasks used before
// the option was shared with actors: the resources the task needs while it
// runs, e.g. {"CPU": 2, "GPU": 1}. Default {"CPU": 1}.
func WithResources(r map[string]float64) runtime.SchedulingOption { return runtime.WithDemand(r) }

// WithStrategy is runtime.WithStrategy: where the task may run
// (runtime.SpreadStrategy, runtime.NodeAffinity, a placement group's
// Bundle). Default: Ray's hybrid policy.
func WithStrategy(s runtime.Strategy) runtime.SchedulingOption { return runtime.WithStrategy(s) }

// WithFailFast is runtime.WithFailFast: the task fails at once with
// runtime.ErrInfeasible when no node can ever fit it. Default: it waits —
// logged, and listed as infeasible by the state API — until a node that fits
// joins.
func WithFailFast() runtime.SchedulingOption { return runtime.WithFailFast() }

// WithMaxRetries sets how often the task runs again when its worker process
// or node dies (a system failure): n ≥ 0, or -1 (any negative n) without
// limit. Default 3, as Ray's. Retries go to a live node. Results are also
// rebuilt within this budget when their only copy is lost with a node.
func WithMaxRetries(n int) Option { return opt(func(o *core.TaskOptions) { o.MaxRetries = &n }) }

// WithRetryExceptions retries the task when it returns an error or panics
// too, within WithMaxRetries. Default: application errors are not retried.
func WithRetryExceptions() Option {
	return opt(func(o *core.TaskOptions) { o.RetryExceptions = true })
}

func as[T any](v any) T {
	t, _ := v.(T)
	return t
}

func register(name string, types []reflect.Type, call func(context.Context, []any) (any, error)) {
	core.RegisterFn(&core.Fn{Name: name, ArgTypes: types, Call: call})
}

// refOf is r as the public ref type.
func refOf[R any](r core.Ref) objectstore.Ref[R] { return core.PublicRef[objectstore.Ref[R]](r) }

// submit submits the function name with typed arguments (objectstore.Arg
// values).
func submit[R any](ctx context.Context, name string, opts []Option, args ...any) objectstore.Ref[R] {
	c, err := core.Current()
	if err != nil {
		return refOf[R](core.RefErr(err))
	}
	var o core.TaskOptions
	for _, opt := range opts {
		opt.ApplyTask(&o)
	}
	wire, err := c.TypedArgs(ctx, name, args)
	if err != nil {
		return refOf[R](core.RefErr(err))
	}
	return refOf[R](c.SubmitTask(ctx, name, wire, o))
}

// Func0 is a registered function of no arguments.
type Func0[R any] struct{ name string }

// Register0 registers fn under name.
func Register0[R any](name string, fn func(context.Context) (R, error)) Func0[R] {
	register(name, nil, func(ctx context.Context, _ []any) (any, error) { return fn(ctx) })
	return Func0[R]{name}
}

// Remote calls the function on a worker and returns the ref of its result.
func (f Func0[R]) Remote(ctx context.Context, opts ...Option) objectstore.Ref[R] {
	return submit[R](ctx, f.name, opts)
}

// Name is the registered name.
func (f Func0[R]) Name() string { return f.name }

// Func1 is a registered function of one argument.
type Func1[A, R any] struct{ name string }

// Register1 registers fn under name.
func Register1[A, R any](name string, fn func(context.Context, A) (R, error)) Func1[A, R] {
	register(name, []reflect.Type{reflect.TypeFor[A]()}, func(ctx context.Context, a []any) (any, error) {
		return fn(ctx, as[A](a[0]))
	})
	return Func1[A, R]{name}
}

// Remote calls the function on a worker and returns the ref of its result.
func (f Func1[A, R]) Remote(ctx context.Context, a objectstore.Arg[A], opts ...Option) objectstore.Ref[R] {
	return submit[R](ctx, f.name, opts, a)
}

// Name is the registered name.
func (f Func1[A, R]) Name() string { return f.name }

// Func2 is a registered function of two arguments.
type Func2[A, B, R any] struct{ name string }

// Register2 registers fn under name.
func Register2[A, B, R any](name string, fn func(context.Context, A, B) (R, error)) Func2[A, B, R] {
	register(name, []reflect.Type{reflect.TypeFor[A](), reflect.TypeFor[B]()}, func(ctx context.Context, a []any) (any, error) {
		return fn(ctx, as[A](a[0]), as[B](a[1]))
	})
	return Func2[A, B, R]{name}
}

// Remote calls the function on a worker and returns the ref of its result.
func (f Func2[A, B, R]) Remote(ctx context.Context, a objectstore.Arg[A], b objectstore.Arg[B], opts ...Option) objectstore.Ref[R] {
	return submit[R](ctx, f.name, opts, a, b)
}

// Name is the registered name.
func (f Func2[A, B, R]) Name() string { return f.name }

// Func3 is a registered function of three arguments.
type Func3[A, B, C, R any] struct{ name string }

// Register3 registers fn under name.
func Register3[A, B, C, R any](name string, fn func(context.Context, A, B, C) (R, error)) Func3[A, B, C, R] {
	register(name, []reflect.Type{reflect.TypeFor[A](), reflect.TypeFor[B](), reflect.TypeFor[C]()}, func(ctx context.Context, a []any) (any, error) {
		return fn(ctx, as[A](a[0]), as[B](a[1]), as[C](a[2]))
	})
	return Func3[A, B, C, R]{name}
}

// Remote calls the function on a worker and returns the ref of its result.
func (f Func3[A, B, C, R]) Remote(ctx context.Context, a objectstore.Arg[A], b objectstore.Arg[B], c objectstore.Arg[C], opts ...Option) objectstore.Ref[R] {
	return submit[R](ctx, f.name, opts, a, b, c)
}

// Name is the registered name.
func (f Func3[A, B, C, R]) Name() string { return f.name }

// CancelOption configures Cancel. Options are opaque: make them with
// WithForce and WithRecursive.
type CancelOption interface{ cancelOption }

type cancelOption = core.CancelOption

// WithForce makes Cancel kill the worker process running the task, for a
// task that does not return when its ctx is done (a cgo call, a loop that
// never looks at ctx). The other tasks in flight on that worker are retried
// elsewhere (within their WithMaxRetries). Not for actor calls: Cancel
// refuses it with runtime.ErrInvalidArgument (stop an actor with
// actor.Kill). Default: the task's ctx is cancelled and the worker lives.
func WithForce() CancelOption {
	return core.CancelOptionFunc(func(o *core.CancelOptions) { o.Force = true })
}

// WithRecursive makes Cancel also cancel every task and actor call the
// cancelled call submitted from its ctx (or a context derived from it, even
// through context.WithoutCancel) that has not finished, and theirs in turn;
// with WithForce their tasks are forced too. Default: only the call itself
// is cancelled — though the calls it submitted with its ctx end with that
// ctx anyway, since a call's context governs it (see Cancel).
func WithRecursive() CancelOption {
	return core.CancelOptionFunc(func(o *core.CancelOptions) { o.Recursive = true })
}

// Cancel cancels the task or actor call whose result ref names (Ray's
// ray.cancel). A call still waiting at this process (for its arguments, or
// for a worker) is dropped; a call queued on its worker is dropped there; a
// running call's ctx is cancelled, and it fails when the function returns.
// Either way Get of ref then fails with runtime.ErrCancelled, even if the
// function returns a value after its ctx was done. A call that already
// finished keeps its result, and Cancel of it, or of a ref that names no
// call (a Put), does nothing and returns nil. Cancel returns once the
// cancel is under way; Get of ref waits for its end.
//
// A ref this process borrows (one it received inside a value or a result)
// is cancelled by asking the process that made the call, its owner.
// WithForce on an actor call fails with runtime.ErrInvalidArgument. A zero
// ref, or one whose call could not even be made, returns the error its Get
// returns.
//
// The ctx a call is submitted with governs it too, as in any Go API: when
// it is cancelled, or its deadline passes, before the call finished, the
// call is cancelled as by Cancel (not forced, not recursive). Submit with
// context.WithoutCancel(ctx) for a call that is to outlive ctx.
func Cancel[T any](ctx context.Context, ref objectstore.Ref[T], opts ...CancelOption) error {
	c, err := core.Current()
	if err != nil {
		return err
	}
	var o core.CancelOptions
	for _, opt := range opts {
		opt.ApplyCancel(&o)
	}
	r := core.RefOfPublic(ref)
	if err := r.Usable(); err != nil {
		return err // a zero ref, or one whose call could not be made
	}
	return c.Cancel(ctx, r.Info(), o.Force, o.Recursive)
}

// CallName calls the function registered under name with untyped arguments
// (plain values, objectstore.Val values or refs). A name that is not
// registered, or arguments of the wrong number or type, fail the returned
// ref with runtime.ErrNotFound or runtime.ErrInvalidArgument.
func CallName[R any](ctx context.Context, name string, args ...any) objectstore.Ref[R] {
	c, err := core.Current()
	if err != nil {
		return refOf[R](core.RefErr(err))
	}
	wire, err := c.BuildArgs(ctx, args...)
	if err != nil {
		return refOf[R](core.RefErr(err))
	}
	return refOf[R](c.SubmitTask(ctx, name, wire, core.TaskOptions{}))
}
