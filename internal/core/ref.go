package core

import (
	"context"
	"errors"

	"github.com/goray/goray/internal/codec"
	"github.com/goray/goray/internal/errs"
	pb "github.com/goray/goray/proto/goray/v1"
)

// Ref is a typed reference to an object (objectstore.Ref is an alias).
type Ref[T any] struct {
	info RefInfo
	err  error // set when the call could not even be made
}

// ErrRef makes a ref whose Get returns err.
func ErrRef[T any](err error) Ref[T] { return Ref[T]{err: err} }

// MakeRef wraps a RefInfo.
func MakeRef[T any](info RefInfo) Ref[T] { return Ref[T]{info: info} }

// Info is the untyped reference.
func (r Ref[T]) Info() RefInfo { return r.info }

// ID is the object's ID in hex.
func (r Ref[T]) ID() string { return r.info.ID.String() }

var errZeroRef = errors.New("objectstore: Get on a zero Ref (use the Ref returned by Put or a remote call)")

// Get blocks until the object is ready, or ctx ends, and returns its value.
// An error of the call that makes the object is returned as it is: test it
// with errors.Is against the runtime.ErrX sentinels.
func (r Ref[T]) Get(ctx context.Context) (T, error) {
	var zero T
	if r.err != nil {
		return zero, r.err
	}
	if r.info.Owner == "" {
		return zero, errZeroRef
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
func (r Ref[T]) GorayArg(_ context.Context, c *Core) (*pb.Arg, error) {
	if r.err != nil {
		return nil, r.err
	}
	if r.info.Owner == "" {
		return nil, errZeroRef
	}
	if v := c.readyValue(r.info); v != nil {
		return &pb.Arg{Kind: &pb.Arg_Value{Value: v}}, nil
	}
	return r.info.Arg(), nil
}

// Arg is an argument of type T for a remote call: a value (Val) or a Ref[T].
type Arg[T any] interface {
	GorayArg(ctx context.Context, c *Core) (*pb.Arg, error)
}

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
		if x, ok := a.(AnyArg); ok {
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
