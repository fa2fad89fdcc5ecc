// Package objectstore holds goray's object references.
//
// A Ref[T] names a value that a remote call will produce or that Put stored.
// Whoever creates a ref owns it: small values (under 100 KiB) live in the
// owner's memory, larger ones in the node's shared-memory store, pulled
// between nodes in chunks on demand. Get blocks until the value is there.
//
// An object lives while something holds it: a Ref in its owner's memory, a
// ref inside a value its owner keeps, a call in flight that takes it, or
// another process that received the ref (in an argument, a value or a
// result). Once nothing does — the Go GC found every Ref unreachable, or
// Release dropped them — it is freed in its owner and in every node's
// store. Refs and actor handles inside slices, maps and structs travel
// live. See docs/objects.md.
package objectstore

import (
	"context"

	"github.com/goray/goray/internal/codec"
	"github.com/goray/goray/internal/core"
	pb "github.com/goray/goray/proto/goray/v1"
	"github.com/vmihailenco/msgpack/v5"
)

// Ref is a typed reference to an object: the result of a remote call, or a
// value stored with Put. The process that made it owns the object. A Ref
// passed as an argument of a remote call (an Arg) reaches the callee as its
// value, and the call runs once the value exists. Copies of a Ref share
// one hold on the object, dropped when the GC finds none of them reachable
// or at Release. The zero Ref names no object: its Get fails.
type Ref[T any] struct{ r core.Ref }

// Get blocks until the object is ready, or ctx ends, and returns its value.
// An error of the call that makes the object is returned as it is: test it
// with errors.Is against the runtime.ErrX sentinels. A value that does not
// decode as a T fails with runtime.ErrInvalidArgument.
func (r Ref[T]) Get(ctx context.Context) (T, error) { return core.Get[T](ctx, r.r) }

// ID is the object's ID in hex: all zeros for the zero Ref and for a ref
// whose call could not even be made.
func (r Ref[T]) ID() string { return r.r.ID() }

// Release drops this ref's hold on its object now, instead of when the Go
// GC finds the ref unreachable. Copies of a ref share one hold: after
// Release, Get on any of them fails with runtime.ErrObjectFreed. The object
// itself is freed — in its owner's memory and every node's store — once
// nothing else holds it (other refs, refs inside kept values, calls in
// flight, other processes). Releasing twice, or a zero ref, does nothing.
func (r Ref[T]) Release() { r.r.Release() }

// EncodeMsgpack writes the ref into a MessagePack value, so that refs
// travel inside arguments, results and stored values (slices, maps,
// structs): the receiver gets a live ref to the same object. A zero Ref
// travels as nil; a ref whose call could not be made fails the encode.
func (r Ref[T]) EncodeMsgpack(enc *msgpack.Encoder) error { return core.EncodeRef(enc, r.r) }

// DecodeMsgpack reads a ref written by EncodeMsgpack and takes this
// process's hold on it (registering it with the object's owner).
func (r *Ref[T]) DecodeMsgpack(dec *msgpack.Decoder) error {
	x, err := core.DecodeRef(dec)
	if err != nil {
		return err
	}
	r.r = x
	return nil
}

func (r Ref[T]) coreArg() core.AnyArg   { return r.r }
func (Ref[T]) argOf(*T)                 {}
func (v value[T]) coreArg() core.AnyArg { return core.Value[T]{V: v.v} }
func (value[T]) argOf(*T)               {}

// Arg is an argument of type T of a typed remote call: Val(v) or a Ref[T].
type Arg[T any] interface {
	coreArg() core.AnyArg
	argOf(*T) // only an Arg of T is an Arg[T]
}

// value is the Arg that Val makes.
type value[T any] struct{ v T }

// Val passes a plain value as an argument of a typed remote call.
func Val[T any](v T) Arg[T] { return value[T]{v} }

func init() {
	core.CheckPublicRef[Ref[struct{}]]() // Ref[T] is converted in place: one core.Ref, nothing else
	core.SetPublicRefs(
		func(a any) (core.AnyArg, bool) {
			x, ok := a.(interface{ coreArg() core.AnyArg })
			if !ok {
				return nil, false
			}
			return x.coreArg(), true
		})
}

// Put stores v as a new object owned by this process and returns its ref.
// []byte values are stored raw, protobuf messages as protobuf, everything
// else as MessagePack.
//
// With WithReplicas(n), the value is stored on n distinct nodes; see
// WithReplicas.
func Put[T any](ctx context.Context, v T, opts ...PutOption) (Ref[T], error) {
	c, err := core.Current()
	if err != nil {
		return Ref[T]{}, err
	}
	var o putOptions
	for _, opt := range opts {
		opt(&o)
	}
	var r core.Ref
	if o.replicas > 1 || o.replicas < 0 {
		r, err = c.PutReplicated(ctx, v, o.replicas)
	} else {
		r, err = c.Put(ctx, v)
	}
	if err != nil {
		return Ref[T]{}, err
	}
	return Ref[T]{r}, nil
}

// PutOption is an option of Put.
type PutOption func(*putOptions)

type putOptions struct{ replicas int }

// WithReplicas stores the value on n distinct nodes (1 to 64): this
// process's node, and n-1 other alive nodes that each keep a copy until the
// object is freed (spilling it to disk when their store is full, never
// evicting it). With fewer alive nodes than n, each holds a copy: the ref's
// Replicas says how many. A Get reads the nearest copy and, when the node
// serving it is gone, goes on from another copy at once. While the owner
// (this process) lives, copies lost with their nodes are placed again on
// other alive nodes in the background, back to n. Replicas protect the
// value against the loss of nodes, not of its owner: like every object, it
// is freed when its owner exits. The value is stored in the object store
// even when it is small.
func WithReplicas(n int) PutOption { return func(o *putOptions) { o.replicas = n } }

// Replicas is how many nodes hold a copy of the object now, as its owner
// knows: 1 for an object put without replicas, up to the n of WithReplicas
// (fewer while nodes are missing). It is 0 in a process that does not own
// the ref (a borrower), and for an object that is not stored (pending,
// failed or freed).
func (r Ref[T]) Replicas() int {
	c, err := core.Current()
	if err != nil {
		return 0
	}
	return c.Replicas(r.r)
}

// View is Get for a []byte without a copy, as Ray's zero-copy reads are: a
// value held in this node's shared-memory store comes back as a view of it.
// The view is read-only — writing to it faults and kills the process — and
// it shows the object until the object is freed (nothing holds it any
// more, or its job ends), after which it may show another object: keep the
// ref alive while you use the view. Use Get for bytes
// you may change or keep; use View to read large values fast.
func View(ctx context.Context, ref Ref[[]byte]) ([]byte, error) {
	c, err := core.Current()
	if err != nil {
		return nil, err
	}
	if err := ref.r.Usable(); err != nil {
		return nil, err // a zero or failed ref
	}
	p, err := c.GetPayloadView(ctx, ref.r.Shared())
	ref.r.KeepAlive()
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
	done, err := c.WaitN(ctx, len(refs), n, func(i int) core.RefInfo { return refs[i].r.Shared() })
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
