package core

import (
	"context"
	"fmt"
	"runtime"
	"unsafe"

	"github.com/goray/goray/internal/errs"
	pb "github.com/goray/goray/proto/goray/v1"
)

// Ref is the untyped state behind objectstore.Ref[T]: a hold on the object
// it names (shared by its copies; refcount.go), or the error of a call that
// could not even be made.
type Ref struct {
	h   *handle
	err error // set when the call could not even be made
}

// RefNoHold is a ref to info that takes no hold on the object: for tests of
// the conversions between the core's and the SDK's refs.
func RefNoHold(info RefInfo) Ref { return Ref{h: &handle{info: info}} }

// RefErr is a ref whose Get returns err.
func RefErr(err error) Ref { return Ref{err: err} }

// Info is the object the ref names (zero for a zero or failed ref).
func (r Ref) Info() RefInfo {
	if r.h == nil {
		return RefInfo{}
	}
	return r.h.info
}

// Shared is the object the ref names, made known to this process's table
// so that the info may be used without the ref (waits, clients' refs).
func (r Ref) Shared() RefInfo {
	if r.h == nil {
		return RefInfo{}
	}
	if r.h.value != nil && r.h.c != nil {
		r.h.c.shared(r.h)
	}
	return r.h.info
}

// ID is the object's ID in hex.
func (r Ref) ID() string { return r.Info().ID.String() }

// errZeroRef and errReleased are made per use: an *errs.Error may be
// stamped with where it happened on its way out of a task.
func errZeroRef() error {
	return errs.New(errs.KindInvalidArgument, "", "objectstore: Get on a zero Ref (use the Ref returned by Put or a remote call)")
}

// Usable is nil for a ref that names an object, and otherwise the error
// that Get returns: the call's own error, that the ref is zero, released,
// or could not be registered with its owner.
func (r Ref) Usable() error {
	switch {
	case r.err != nil:
		return r.err
	case r.h == nil:
		return errZeroRef()
	case r.h.err != nil:
		if e, ok := r.h.err.(*errs.Error); ok {
			cp := *e // copies of a ref share the error; a task may stamp its own
			return &cp
		}
		return r.h.err
	case r.h.released.Load():
		return errReleased()
	}
	return nil
}

// Release drops this ref's hold now instead of when the GC finds it
// unreachable; every copy of the ref shares the hold, and their Gets fail
// from now on. The object is freed once nothing else holds it.
func (r Ref) Release() {
	if r.h != nil && r.h.c != nil && r.h.err == nil {
		r.h.release()
	}
}

// KeepAlive keeps r's hold until this call, as runtime.KeepAlive does.
func (r Ref) KeepAlive() { runtime.KeepAlive(r.h) }

// Get blocks until the object is ready, or ctx ends, and returns its value
// as a T. An error of the call that makes the object is returned as it is.
// Refs inside the value come back live: held, and registered with their
// owners.
func Get[T any](ctx context.Context, r Ref) (T, error) {
	var zero T
	if err := r.Usable(); err != nil {
		return zero, err
	}
	c, err := Current()
	if err != nil {
		return zero, err
	}
	p := r.h.value // a small put of this process
	if p == nil {
		if p, err = c.GetPayload(ctx, r.h.info); err != nil {
			return zero, err
		}
	}
	v, err := DecodeValue[T](ctx, c, p)
	runtime.KeepAlive(r.h) // the object's holds keep the refs inside it until theirs are taken
	if err != nil {
		return zero, errs.New(errs.KindInvalidArgument, "", "object %s: %v", r.h.info.ID, err)
	}
	return v, nil
}

// GorayArg makes the ref a call argument: the callee receives its value. A
// small value this process owns and already has travels inline, so the
// callee need not ask this process for it. The call holds the ref until it
// completes.
func (r Ref) GorayArg(_ context.Context, c *Core, a *Args) error {
	if err := r.Usable(); err != nil {
		return err
	}
	a.holds = append(a.holds, r.h)
	if v := r.h.value; v != nil {
		a.Wire = append(a.Wire, &pb.Arg{Kind: &pb.Arg_Value{Value: v}})
		return nil
	}
	if v := c.readyValue(r.h.info); v != nil {
		a.Wire = append(a.Wire, &pb.Arg{Kind: &pb.Arg_Value{Value: v}})
		return nil
	}
	a.Wire = append(a.Wire, r.h.info.Arg())
	return nil
}

// Args are a call's wire arguments and the holds that keep the objects they
// name (refs, refs inside values, stored large values) until the call
// completes.
type Args struct {
	Wire  []*pb.Arg
	holds []*handle
}

// Add appends a wire argument, held by ref (which may be zero).
func (a *Args) Add(arg *pb.Arg, ref Ref) {
	a.Wire = append(a.Wire, arg)
	if ref.h != nil {
		a.holds = append(a.holds, ref.h)
	}
}

// The SDK's Ref[T] and Arg[T] are defined in package objectstore, which
// imports this one, so that go doc shows their methods and their insides
// stay hidden. objectstore.Ref[T] is a struct whose one field is a Ref, so
// actor, task and BuildArgs convert between the two in place (PublicRef,
// InfoOf), without an allocation on every call; objectstore checks that
// layout in its init (CheckPublicRef). Arguments reach the core values
// through the converter objectstore registers (SetPublicRefs).
var unwrapArg func(a any) (AnyArg, bool)

// SetPublicRefs registers objectstore's converter: unwrap returns the
// argument inside an objectstore.Ref or objectstore.Val value, and false
// for any other value. Only objectstore calls it, from its init.
func SetPublicRefs(unwrap func(a any) (AnyArg, bool)) { unwrapArg = unwrap }

// CheckPublicRef panics unless P has a Ref's size and alignment, as
// objectstore.Ref[T] must for PublicRef and InfoOf; objectstore's init
// calls it, so a change of its fields fails at once instead of corrupting
// memory.
func CheckPublicRef[P any]() {
	var p P
	var r Ref
	if unsafe.Sizeof(p) != unsafe.Sizeof(r) || unsafe.Alignof(p) != unsafe.Alignof(r) {
		panic(fmt.Sprintf("core: %T is not laid out as a core.Ref (size %d, want %d): objectstore.Ref must hold exactly one core.Ref", p, unsafe.Sizeof(p), unsafe.Sizeof(r)))
	}
}

// PublicRef is r as the public ref type P, an objectstore.Ref[T] (a struct
// of one Ref: see CheckPublicRef). It copies, never allocates.
func PublicRef[P any](r Ref) P { return *(*P)(unsafe.Pointer(&r)) }

// RefOfPublic is the Ref inside p, an objectstore.Ref[T].
func RefOfPublic[P any](p P) Ref { return *(*Ref)(unsafe.Pointer(&p)) }

// ArgOf is the argument inside a, an objectstore.Ref or objectstore.Val
// value; false for any other value.
func ArgOf(a any) (AnyArg, bool) {
	if unwrapArg == nil {
		return nil, false
	}
	return unwrapArg(a)
}

// InfoOf is the object p, an objectstore.Ref[T], names.
func InfoOf[P any](p P) RefInfo { return RefOfPublic(p).Shared() }

// Value is a plain value passed as an argument.
type Value[T any] struct{ V T }

// GorayArg encodes the value.
func (v Value[T]) GorayArg(ctx context.Context, c *Core, a *Args) error {
	return c.ValueArg(ctx, v.V, a)
}

// AnyArg is what CallName-style calls accept: a Ref, a Value, or a plain value.
type AnyArg interface {
	GorayArg(ctx context.Context, c *Core, a *Args) error
}

// BuildArgs turns call arguments into wire arguments.
func (c *Core) BuildArgs(ctx context.Context, args ...any) (Args, error) {
	out := Args{Wire: make([]*pb.Arg, 0, len(args))}
	for _, a := range args {
		var err error
		if x, ok := ArgOf(a); ok {
			err = x.GorayArg(ctx, c, &out)
		} else if x, ok := a.(AnyArg); ok {
			err = x.GorayArg(ctx, c, &out)
		} else {
			err = c.ValueArg(ctx, a, &out)
		}
		if err != nil {
			return Args{}, err
		}
	}
	return out, nil
}

// TypedArgs turns the arguments of a typed call of fn (objectstore.Ref and
// objectstore.Val values) into wire arguments. A nil argument is an error
// that says what to pass instead.
func (c *Core) TypedArgs(ctx context.Context, fn string, args []any) (Args, error) {
	out := Args{Wire: make([]*pb.Arg, 0, len(args))}
	for i, a := range args {
		x, ok := ArgOf(a)
		if !ok {
			return Args{}, errs.New(errs.KindInvalidArgument, fn, "argument %d of %s is a nil Arg: pass objectstore.Val(v) or a ref", i+1, fn)
		}
		if err := x.GorayArg(ctx, c, &out); err != nil {
			return Args{}, err
		}
	}
	return out, nil
}
