package rpc

import (
	"context"
	"strconv"
	"sync/atomic"

	"google.golang.org/grpc/metadata"
)

// EpochKey is the metadata key in which a head of a cluster of several
// sends its leadership epoch (its election key's create revision, which
// grows with every term): on its commands to raylets, and in the response
// header of the calls it serves. A raylet remembers the highest epoch it
// has seen and refuses commands of an older one, so that a deposed leader
// that has not yet noticed cannot act on the nodes.
const EpochKey = "goray-head-epoch"

// WithEpoch adds epoch to ctx's outgoing metadata (nothing for epoch 0).
func WithEpoch(ctx context.Context, epoch int64) context.Context {
	if epoch <= 0 {
		return ctx
	}
	return metadata.AppendToOutgoingContext(ctx, EpochKey, strconv.FormatInt(epoch, 10))
}

// EpochOf is the epoch in md (0 when none or malformed).
func EpochOf(md metadata.MD) int64 {
	v := md.Get(EpochKey)
	if len(v) == 0 {
		return 0
	}
	n, err := strconv.ParseInt(v[0], 10, 64)
	if err != nil || n < 0 {
		return 0
	}
	return n
}

// EpochFence is the highest head epoch a raylet has seen.
type EpochFence struct{ max atomic.Int64 }

// Observe records epoch (from a head's response header).
func (f *EpochFence) Observe(epoch int64) {
	for {
		cur := f.max.Load()
		if epoch <= cur || f.max.CompareAndSwap(cur, epoch) {
			return
		}
	}
}

// Check admits a command whose incoming metadata carries an epoch no older
// than any seen (and records it); a command without one (a single head) is
// admitted. It returns the epochs when it refuses.
func (f *EpochFence) Check(ctx context.Context) (ok bool, got, current int64) {
	md, _ := metadata.FromIncomingContext(ctx)
	e := EpochOf(md)
	if e == 0 {
		return true, 0, f.max.Load()
	}
	f.Observe(e)
	cur := f.max.Load()
	return e >= cur, e, cur
}
