// Package objectstore holds goray's object references.
//
// A Ref[T] names a value that a remote call will produce or that Put stored.
// Whoever creates a ref owns it: small values (under 100 KiB) live in the
// owner's memory, larger ones in the node's shared-memory store, pulled
// between nodes in chunks on demand. Get blocks until the value is there.
package objectstore

import (
	"context"

	"github.com/goray/goray/internal/codec"
	"github.com/goray/goray/internal/core"
	pb "github.com/goray/goray/proto/goray/v1"
)

// Ref is a typed reference to an object. Get(ctx) returns its value; a Ref
// passed as an argument to a remote call reaches the callee as its value.
type Ref[T any] = core.Ref[T]

// Arg is an argument of type T for a typed remote call: Val(v) or a Ref[T].
type Arg[T any] = core.Arg[T]

// Val passes a plain value as an argument of a typed remote call.
func Val[T any](v T) Arg[T] { return core.Value[T]{V: v} }

// Put stores v as a new object owned by this process and returns its ref.
// []byte values are stored raw, protobuf messages as protobuf, everything
// else as MessagePack.
func Put[T any](ctx context.Context, v T) (Ref[T], error) {
	c, err := core.Current()
	if err != nil {
		return Ref[T]{}, err
	}
	info, err := c.Put(ctx, v)
	if err != nil {
		return Ref[T]{}, err
	}
	return core.MakeRef[T](info), nil
}

// View is Get for a []byte without a copy, as Ray's zero-copy reads are: a
// value held in this node's shared-memory store comes back as a view of it.
// The view is read-only — writing to it faults and kills the process — and
// it shows the object until the object is freed (its owner releases it, or
// its job ends), after which it may show another object. Use Get for bytes
// you may change or keep; use View to read large values fast.
func View(ctx context.Context, ref Ref[[]byte]) ([]byte, error) {
	c, err := core.Current()
	if err != nil {
		return nil, err
	}
	if _, err := ref.GorayArg(ctx, c); err != nil {
		return nil, err // a zero or failed ref
	}
	p, err := c.GetPayloadView(ctx, ref.Info())
	if err != nil {
		return nil, err
	}
	if p.GetEncoding() != pb.Encoding_ENCODING_RAW {
		return codec.Decode[[]byte](p)
	}
	return p.GetData(), nil
}

// Wait blocks until n of refs are ready (their value or their error is
// there) or ctx ends, and splits refs into ready and not ready, each in the
// order given; ready holds at most n refs. n is clamped to len(refs). If ctx ends first it
// returns ctx's error, with the split at that moment; for a passed deadline
// both errors.Is(err, context.DeadlineExceeded) and errors.Is(err,
// runtime.ErrTimeout) hold.
func Wait[T any](ctx context.Context, refs []Ref[T], n int) (ready, notReady []Ref[T], err error) {
	c, err := core.Current()
	if err != nil {
		return nil, refs, err
	}
	infos := make([]core.RefInfo, len(refs))
	for i, r := range refs {
		infos[i] = r.Info()
	}
	done, err := c.WaitN(ctx, infos, n)
	ready, notReady = split(refs, done)
	return ready, notReady, err
}

// split splits refs by done, each part in the order given.
func split[T any](refs []Ref[T], done []bool) (ready, notReady []Ref[T]) {
	for i, r := range refs {
		if done[i] {
			ready = append(ready, r)
		} else {
			notReady = append(notReady, r)
		}
	}
	return ready, notReady
}
