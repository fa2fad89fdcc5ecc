package core

import (
	"context"
	"errors"
	"fmt"
	"unsafe"

	"github.com/goray/goray/internal/codec"
	"github.com/goray/goray/internal/errs"
	pb "github.com/goray/goray/proto/goray/v1"
)

// Ref is the untyped state behind objectstore.Ref[T]: the object it names,
// or the error of a call that could not even be made.
type Ref struct {
	info RefInfo
	err  error // set when the call could not even be made
}

// RefOf is the ref of the object info names.
func RefOf(info RefInfo) Ref { return Ref{info: info} }

// RefErr is a ref whose Get returns err.
func RefErr(err error) Ref { return Ref{err: err} }

// Info is the object the ref names (zero for a zero or failed ref).
func (r Ref) Info() RefInfo { return r.info }

// ID is the object's ID in hex.
func (r Ref) ID() string { return r.info.ID.String() }

var errZeroRef = errors.New("objectstore: Get on a zero Ref (use the Ref returned by Put or a remote call)")

// Usable is nil for a ref that names an object, and otherwise the error
// that Get returns: the call's own error, or that the ref is zero.
func (r Ref) Usable() error {
	if r.err != nil {
		return r.err
	}
	if r.info.Owner == "" {
		return errZeroRef
	}
	return nil
}

// Get blocks until the object is ready, or ctx ends, and returns its value
// as a T. An error of the call that makes the object is returned as it is.
func Get[T any](ctx context.Context, r Ref) (T, error) {
	var zero T
	if err := r.Usable(); err != nil {
		return zero, err
	}
	c, err := Current()
	if err != nil {
		return zero, err
	}
	p, err := c.GetPayload(ctx, r.info)
	if err != nil {
		return zero, err
	}
	v, err := codec.Decode[T](p)
	if err != nil {
		return zero, errs.New(errs.KindInvalidArgument, "", "object %s: %v", r.info.ID, err)
	}
	return v, nil
}

// GorayArg makes the ref a call argument: the callee receives its value. A
// small value this process owns and already has travels inline, so the
// callee need not ask this process for it.
func (r Ref) GorayArg(_ context.Context, c *Core) (*pb.Arg, error) {
	if err := r.Usable(); err != nil {
		return nil, err
	}
	if v := c.readyValue(r.info); v != nil {
		return &pb.Arg{Kind: &pb.Arg_Value{Value: v}}, nil
	}
	return r.info.Arg(), nil
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
func InfoOf[P any](p P) RefInfo { return RefOfPublic(p).info }

// Value is a plain value passed as an argument.
type Value[T any] struct{ V T }

// GorayArg encodes the value.
func (v Value[T]) GorayArg(ctx context.Context, c *Core) (*pb.Arg, error) {
	return c.ValueArg(ctx, v.V)
}

// AnyArg is what CallName-style calls accept: a Ref, a Value, or a plain value.
type AnyArg interface {
	GorayArg(ctx context.Context, c *Core) (*pb.Arg, error)
}

// BuildArgs turns call arguments into wire arguments.
func (c *Core) BuildArgs(ctx context.Context, args ...any) ([]*pb.Arg, error) {
	out := make([]*pb.Arg, len(args))
	for i, a := range args {
		var err error
		if x, ok := ArgOf(a); ok {
			out[i], err = x.GorayArg(ctx, c)
		} else if x, ok := a.(AnyArg); ok {
			out[i], err = x.GorayArg(ctx, c)
		} else {
			out[i], err = c.ValueArg(ctx, a)
		}
		if err != nil {
			return nil, err
		}
	}
	return out, nil
}

// TypedArgs turns the arguments of a typed call of fn (objectstore.Ref and
// objectstore.Val values) into wire arguments. A nil argument is an error
// that says what to pass instead.
func (c *Core) TypedArgs(ctx context.Context, fn string, args []any) ([]*pb.Arg, error) {
	out := make([]*pb.Arg, len(args))
	for i, a := range args {
		x, ok := ArgOf(a)
		if !ok {
			return nil, errs.New(errs.KindInvalidArgument, fn, "argument %d of %s is a nil Arg: pass objectstore.Val(v) or a ref", i+1, fn)
		}
		var err error
		if out[i], err = x.GorayArg(ctx, c); err != nil {
			return nil, err
		}
	}
	return out, nil
}
