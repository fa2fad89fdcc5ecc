// Package actor runs stateful actors: values of your types that live in
// worker processes and serve method calls one at a time, in the order each
// caller made them.
//
// Register the type and its methods at package level under stable names:
//
//	type Counter struct{ n int }
//
//	func (c *Counter) Add(ctx context.Context, d int) (int, error) { c.n += d; return c.n, nil }
//
//	var (
//		CounterType = actor.Register("counter", func() *Counter { return &Counter{} })
//		CounterAdd  = actor.Method1(CounterType, "add", (*Counter).Add)
//	)
//
// then spawn and call:
//
//	h, err := actor.Spawn(ctx, CounterType)
//	ref := CounterAdd.Remote(ctx, h, objectstore.Val(5)) // objectstore.Ref[int]
//	n, err := ref.Get(ctx)
//
// Actors are goroutines with mailboxes inside worker processes, so a node
// holds very many of them. Calls go straight from caller to the hosting
// worker; the head only places actors and finds them by name.
package actor

import (
	"context"
	"github.com/vmihailenco/msgpack/v5"
	"reflect"

	"github.com/goray/goray/internal/core"
	"github.com/goray/goray/objectstore"
	"github.com/goray/goray/runtime"
)

// Type is a registered actor type.
type Type[T any] struct{ t *core.ActorType }

// Register registers actor type T under name; newFn makes each new actor.
// Call it at package level (before runtime.Init): worker processes find the
// type by name in the same program.
func Register[T any](name string, newFn func() *T) Type[T] {
	return Type[T]{core.RegisterActorType(name, func() any { return newFn() })}
}

// Name is the registered name.
func (t Type[T]) Name() string { return t.t.Name }

// Handle is a reference to a live actor of type T, as Spawn and Get return
// it. Call the actor's methods with the Remote method of the Caller that
// MethodN registered (or with CallName), and stop it with Kill. The zero
// Handle names no actor: calls on it fail with runtime.ErrInvalidArgument.
type Handle[T any] struct{ h *core.ActorHandle }

// ID is the actor's ID in hex.
// EncodeMsgpack writes the handle into a MessagePack value, so that handles
// travel inside arguments, results and stored values: the receiver can call
// the same actor. A zero Handle travels as nil.
func (h Handle[T]) EncodeMsgpack(enc *msgpack.Encoder) error { return core.EncodeActor(enc, h.h) }

// DecodeMsgpack reads a handle written by EncodeMsgpack.
func (h *Handle[T]) DecodeMsgpack(dec *msgpack.Decoder) error {
	x, err := core.DecodeActor(dec)
	if err != nil {
		return err
	}
	h.h = x
	return nil
}

func (h Handle[T]) ID() string {
	if h.h == nil {
		return ""
	}
	return h.h.ID.String()
}

// Option configures Spawn, SpawnName and Get. Options are opaque: make them
// with the WithX functions of this package, or with the options actors share
// with tasks (runtime.WithDemand, runtime.WithStrategy, runtime.WithFailFast),
// which are Options too.
type Option interface{ actorOption }

type actorOption = core.ActorOption

// opt makes an Option from a function that sets actor options.
func opt(f func(*core.ActorOptions)) Option { return core.ActorOptionFunc(f) }

// WithName names the actor, unique within its namespace, so others can find
// it with Get. Default: unnamed (so is the empty name).
func WithName(name string) Option { return opt(func(o *core.ActorOptions) { o.Name = name }) }

// WithNamespace sets the namespace of the actor's name. Default: the driver's
// (runtime.WithNamespace, "default" unless set).
func WithNamespace(ns string) Option { return opt(func(o *core.ActorOptions) { o.Namespace = ns }) }

// WithResources is runtime.WithDemand, kept under the name actors used
// before the option was shared with tasks: the resources the actor holds
// while it lives, e.g. {"CPU": 1, "GPU": 1}, and so which nodes can host it.
// Default: it needs a node with 1 CPU and holds nothing (Ray's default).
func WithResources(r map[string]float64) runtime.SchedulingOption { return runtime.WithDemand(r) }

// WithStrategy is runtime.WithStrategy: where the actor may be placed
// (runtime.SpreadStrategy, runtime.NodeAffinity, a placement group's
// Bundle). Default: Ray's hybrid policy.
func WithStrategy(s runtime.Strategy) runtime.SchedulingOption { return runtime.WithStrategy(s) }

// WithFailFast is runtime.WithFailFast: Spawn fails at once with
// runtime.ErrInfeasible when no node can ever fit the actor. Default: the
// actor waits — logged, and listed as infeasible by the state API — until a
// node that fits joins.
func WithFailFast() runtime.SchedulingOption { return runtime.WithFailFast() }

// WithGetIfExists makes Spawn with WithName return the live actor of that
// name when there is one (of the same type), instead of failing. Default:
// a taken name fails Spawn.
func WithGetIfExists() Option { return opt(func(o *core.ActorOptions) { o.GetIfExists = true }) }

// WithMaxRestarts sets how often the actor is started again, on a live
// node, when its worker process or node dies: n ≥ 0, or -1 (any negative n)
// without limit. Default 0: it is dead for good. A restarted actor starts
// from its constructor.
func WithMaxRestarts(n int) Option { return opt(func(o *core.ActorOptions) { o.MaxRestarts = n }) }

// WithMaxTaskRetries sets how often a call that was in flight when the actor
// died is sent again to its next incarnation: n ≥ 0, or -1 (any negative n)
// without limit. Default 0: such a call fails with runtime.ErrWorkerCrashed
// (at-most-once); above 0 a call may run more than once (at-least-once).
// Calls made while the actor restarts wait for it either way.
func WithMaxTaskRetries(n int) Option {
	return opt(func(o *core.ActorOptions) { o.MaxTaskRetries = n })
}

// WithDetached lets the actor outlive the job that made it: it lives until
// actor.Kill. Give it a name (WithName) so that others can find it.
// Default: the actor dies with its driver's job.
func WithDetached() Option { return opt(func(o *core.ActorOptions) { o.Detached = true }) }

// WithMaxConcurrency lets up to n calls run at once (still started in
// order). Default 1; n below 1 counts as 1.
func WithMaxConcurrency(n int) Option {
	return opt(func(o *core.ActorOptions) { o.MaxConcurrency = n })
}

func options(opts []Option) core.ActorOptions {
	var o core.ActorOptions
	for _, opt := range opts {
		opt.ApplyActor(&o)
	}
	return o
}

// Spawn creates an actor of type t on a node that fits it and returns when
// it runs.
func Spawn[T any](ctx context.Context, t Type[T], opts ...Option) (Handle[T], error) {
	h, err := spawn(ctx, t.t.Name, opts)
	return Handle[T]{h}, err
}

// SpawnName creates an actor of the type registered under typeName. An
// unregistered name fails with runtime.ErrNotFound.
func SpawnName(ctx context.Context, typeName string, opts ...Option) (Handle[any], error) {
	h, err := spawn(ctx, typeName, opts)
	return Handle[any]{h}, err
}

func spawn(ctx context.Context, typeName string, opts []Option) (*core.ActorHandle, error) {
	c, err := core.Current()
	if err != nil {
		return nil, err
	}
	return c.CreateActor(ctx, typeName, options(opts))
}

// Get finds the live actor named name (in the namespace of WithNamespace, or
// the driver's). It fails with runtime.ErrNotFound when there is none.
func Get[T any](ctx context.Context, t Type[T], name string, opts ...Option) (Handle[T], error) {
	c, err := core.Current()
	if err != nil {
		return Handle[T]{}, err
	}
	o := options(opts)
	h, err := c.GetActor(ctx, name, o.Namespace)
	return Handle[T]{h}, err
}

// Kill stops the actor. Its running and queued calls fail with
// runtime.ErrActorDied at once, the running methods' contexts are
// cancelled, and calls made after fail with runtime.ErrActorDied too. A
// method that ignores its context runs on; its worker process is ended when
// it hosts no other actor (see docs/tasks.md). A call of an actor is
// cancelled with task.Cancel, or by the end of the ctx it was made with.
func Kill[T any](ctx context.Context, h Handle[T]) error {
	c, err := core.Current()
	if err != nil {
		return err
	}
	return c.KillActor(ctx, h.h)
}

// refOf is r as the public ref type.
func refOf[R any](r core.Ref) objectstore.Ref[R] { return core.PublicRef[objectstore.Ref[R]](r) }

// call calls method on h with typed arguments (objectstore.Arg values).
func call[R, T any](ctx context.Context, h Handle[T], method string, args ...any) objectstore.Ref[R] {
	c, err := core.Current()
	if err != nil {
		return refOf[R](core.RefErr(err))
	}
	wire, err := c.TypedArgs(ctx, method, args)
	if err != nil {
		return refOf[R](core.RefErr(err))
	}
	return refOf[R](c.CallActor(ctx, h.h, method, wire))
}

// CallName calls the method registered under method with untyped arguments
// (plain values, objectstore.Val values or refs). An unknown method, or
// arguments of the wrong number or type, fail the returned ref with
// runtime.ErrNotFound or runtime.ErrInvalidArgument.
func CallName[R, T any](ctx context.Context, h Handle[T], method string, args ...any) objectstore.Ref[R] {
	c, err := core.Current()
	if err != nil {
		return refOf[R](core.RefErr(err))
	}
	wire, err := c.BuildArgs(ctx, args...)
	if err != nil {
		return refOf[R](core.RefErr(err))
	}
	return refOf[R](c.CallActor(ctx, h.h, method, wire))
}

func as[T any](v any) T {
	t, _ := v.(T)
	return t
}

func typesOf(ts ...reflect.Type) []reflect.Type { return ts }

// Caller0 is a registered method of no arguments.
type Caller0[T, R any] struct{ name string }

// Method0 registers method m of t under name.
func Method0[T, R any](t Type[T], name string, m func(*T, context.Context) (R, error)) Caller0[T, R] {
	t.t.RegisterMethod(&core.Method{Name: name, Call: func(ctx context.Context, recv any, _ []any) (any, error) {
		return m(recv.(*T), ctx)
	}})
	return Caller0[T, R]{name}
}

// Remote calls the method on the actor and returns the ref of its result.
func (m Caller0[T, R]) Remote(ctx context.Context, h Handle[T]) objectstore.Ref[R] {
	return call[R](ctx, h, m.name)
}

// Caller1 is a registered method of one argument.
type Caller1[T, A, R any] struct{ name string }

// Method1 registers method m of t under name.
func Method1[T, A, R any](t Type[T], name string, m func(*T, context.Context, A) (R, error)) Caller1[T, A, R] {
	t.t.RegisterMethod(&core.Method{Name: name, ArgTypes: typesOf(reflect.TypeFor[A]()),
		Call: func(ctx context.Context, recv any, a []any) (any, error) {
			return m(recv.(*T), ctx, as[A](a[0]))
		}})
	return Caller1[T, A, R]{name}
}

// Remote calls the method on the actor and returns the ref of its result.
func (m Caller1[T, A, R]) Remote(ctx context.Context, h Handle[T], a objectstore.Arg[A]) objectstore.Ref[R] {
	return call[R](ctx, h, m.name, a)
}

// Caller2 is a registered method of two arguments.
type Caller2[T, A, B, R any] struct{ name string }

// Method2 registers method m of t under name.
func Method2[T, A, B, R any](t Type[T], name string, m func(*T, context.Context, A, B) (R, error)) Caller2[T, A, B, R] {
	t.t.RegisterMethod(&core.Method{Name: name, ArgTypes: typesOf(reflect.TypeFor[A](), reflect.TypeFor[B]()),
		Call: func(ctx context.Context, recv any, a []any) (any, error) {
			return m(recv.(*T), ctx, as[A](a[0]), as[B](a[1]))
		}})
	return Caller2[T, A, B, R]{name}
}

// Remote calls the method on the actor and returns the ref of its result.
func (m Caller2[T, A, B, R]) Remote(ctx context.Context, h Handle[T], a objectstore.Arg[A], b objectstore.Arg[B]) objectstore.Ref[R] {
	return call[R](ctx, h, m.name, a, b)
}

// Caller3 is a registered method of three arguments.
type Caller3[T, A, B, C, R any] struct{ name string }

// Method3 registers method m of t under name.
func Method3[T, A, B, C, R any](t Type[T], name string, m func(*T, context.Context, A, B, C) (R, error)) Caller3[T, A, B, C, R] {
	t.t.RegisterMethod(&core.Method{Name: name, ArgTypes: typesOf(reflect.TypeFor[A](), reflect.TypeFor[B](), reflect.TypeFor[C]()),
		Call: func(ctx context.Context, recv any, a []any) (any, error) {
			return m(recv.(*T), ctx, as[A](a[0]), as[B](a[1]), as[C](a[2]))
		}})
	return Caller3[T, A, B, C, R]{name}
}

// Remote calls the method on the actor and returns the ref of its result.
func (m Caller3[T, A, B, C, R]) Remote(ctx context.Context, h Handle[T], a objectstore.Arg[A], b objectstore.Arg[B], c objectstore.Arg[C]) objectstore.Ref[R] {
	return call[R](ctx, h, m.name, a, b, c)
}
