package bench

import (
	"context"
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"time"

	"github.com/goray/goray/internal/rpc"
	"github.com/goray/goray/objectstore"
	pb "github.com/goray/goray/proto/goray/v1"
)

// The spilling workloads run against the driver's node (the head raylet of
// the embedded cluster) at its own capacity: spill_gigabytes puts into a
// store that is full, so that every byte put is a byte spilled to disk;
// restore_gigabytes gets objects that were spilled. Their baselines write
// and read the same bytes, in objects of the same size, to and from a plain
// file in the node's spill directory, in this process.
const (
	spillWriteGigabytes = "spill_file_write_gigabytes"
	spillReadGigabytes  = "spill_file_read_gigabytes"
	goalSpill           = "≥ 0.7 × " + spillWriteGigabytes
	goalRestore         = "≥ 0.7 × " + spillReadGigabytes
)

// spillObject is the size of one object of the spilling workloads.
func spillObject(sz sizes) int { return min(64<<20, sz.transfer) }

// localStore is the driver's node's object store figures (capacity, spill
// directory), asked of its raylet; it starts the cluster if need be.
func (r *runner) localStore(ctx context.Context) (*pb.ObjectStoreStats, error) {
	addr, token := r.cfg.Address, r.cfg.Token
	if addr == "" {
		if r.cluster == nil {
			r.progress("    starting the embedded cluster (two raylet processes)")
			c, err := startCluster(ctx, r.cfg.Exe)
			if err != nil {
				return nil, err
			}
			r.cluster = c
		}
		addr, token = r.cluster.addr, r.cluster.token
	}
	cc, err := rpc.Dial(addr, rpc.ResolveToken(token, addr))
	if err != nil {
		return nil, err
	}
	defer cc.Close()
	info, err := rpc.NewNodeClient(cc).GetNodeInfo(ctx, &pb.GetNodeInfoRequest{})
	if err != nil {
		return nil, err
	}
	st := info.GetObjectStore()
	if st.GetCapacityBytes() == 0 || st.GetSpillDir() == "" {
		return nil, unavailable("the node at %s has no object store capacity or spill directory (no arena, or an older raylet)", addr)
	}
	return st, nil
}

// awaitRoom waits until the driver's node's arena has room for n more
// bytes, or its use stops falling (the background spill is done).
func (r *runner) awaitRoom(ctx context.Context, n uint64) error {
	last := uint64(math.MaxUint64)
	for {
		st, err := r.localStore(ctx)
		if err != nil {
			return err
		}
		used := st.GetUsedBytes()
		if used+n <= st.GetCapacityBytes() || used >= last {
			return nil
		}
		last = used
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(5 * time.Millisecond):
		}
	}
}

// baselineFile is a fresh file in the node's spill directory for a
// baseline, removed by the returned cleanup.
func baselineFile(dir, name string) (string, func()) {
	p := filepath.Join(dir, fmt.Sprintf("bench-%s-%d", name, os.Getpid()))
	return p, func() { os.Remove(p) }
}

func spillBaselines(sz sizes) []*spec {
	obj := spillObject(sz)
	per := float64(obj) / gb
	return []*spec{
		{name: spillWriteGigabytes, unit: UnitGB, per: per,
			note: fmt.Sprintf("write %d MiB to a new file in the node's spill directory (one write, no fsync, as spilling does)", obj>>20),
			setup: func(ctx context.Context, r *runner) (op, func(), error) {
				st, err := r.localStore(ctx)
				if err != nil {
					return nil, nil, err
				}
				buf := largeBuffer(obj)
				path, cleanup := baselineFile(st.GetSpillDir(), "write")
				return func(_ context.Context, w *stopwatch) error {
					w.Pause()
					os.Remove(path) // spilling's files go as their objects are freed, not timed either
					w.Resume()
					f, err := os.OpenFile(path, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o600)
					if err != nil {
						return err
					}
					if _, err := f.Write(buf); err != nil {
						f.Close()
						return err
					}
					return f.Close()
				}, cleanup, nil
			}},
		{name: spillReadGigabytes, unit: UnitGB, per: per,
			note: fmt.Sprintf("read %d MiB at a time into a fresh buffer from a file of a few objects in the node's spill directory", obj>>20),
			setup: func(ctx context.Context, r *runner) (op, func(), error) {
				st, err := r.localStore(ctx)
				if err != nil {
					return nil, nil, err
				}
				const n = 8
				path, cleanup := baselineFile(st.GetSpillDir(), "read")
				f, err := os.OpenFile(path, os.O_CREATE|os.O_EXCL|os.O_RDWR, 0o600)
				if err != nil {
					return nil, nil, err
				}
				buf := largeBuffer(obj)
				for range n {
					if _, err := f.Write(buf); err != nil {
						f.Close()
						cleanup()
						return nil, nil, err
					}
				}
				i := 0
				return func(context.Context, *stopwatch) error {
						b := make([]byte, obj)
						m, err := f.ReadAt(b, int64(i%n)*int64(obj))
						i++
						if m != obj {
							return fmt.Errorf("read %d of %d bytes: %v", m, obj, err)
						}
						return nil
					}, func() {
						f.Close()
						cleanup()
					}, nil
			}},
	}
}

func spillSpecs(sz sizes) []*spec {
	obj := spillObject(sz)
	per := float64(obj) / gb
	return []*spec{
		{name: "spill_gigabytes", unit: UnitGB, per: per, baseline: spillWriteGigabytes, goal: goalSpill,
			note: fmt.Sprintf("puts of %d MiB into a full store (each spills as much as it puts), the oldest ref released after each put", obj>>20),
			setup: jobSetup(func(ctx context.Context, r *runner) (op, error) {
				st, err := r.localStore(ctx)
				if err != nil {
					return nil, err
				}
				buf := largeBuffer(obj)
				var held []objectstore.Ref[[]byte]
				// Fill the store to its capacity, holding every ref.
				for filled := uint64(0); filled < st.GetCapacityBytes(); filled += uint64(obj) {
					ref, err := objectstore.Put(ctx, buf)
					if err != nil {
						return nil, fmt.Errorf("fill the store: %w", err)
					}
					held = append(held, ref)
				}
				return func(ctx context.Context, w *stopwatch) error {
					ref, err := objectstore.Put(ctx, buf)
					if err != nil {
						return err
					}
					w.Pause()
					held = append(held, ref)
					held[0].Release()
					held = held[1:]
					w.Resume()
					return nil
				}, nil
			})},
		{name: "restore_gigabytes", unit: UnitGB, per: per, baseline: spillReadGigabytes, goal: goalRestore,
			note: fmt.Sprintf("gets ([]byte, a copy) of spilled %d MiB objects, round robin", obj>>20),
			setup: jobSetup(func(ctx context.Context, r *runner) (op, error) {
				st, err := r.localStore(ctx)
				if err != nil {
					return nil, err
				}
				buf := largeBuffer(obj)
				var refs []objectstore.Ref[[]byte]
				for filled := uint64(0); filled < st.GetCapacityBytes()*5/4; filled += uint64(obj) {
					// Each put waits for the room the background spill makes:
					// a put into a full store is written straight to a spill
					// file, and the spilled objects are then to be the first
					// ones put (the least recently used), which are read.
					if err := r.awaitRoom(ctx, uint64(obj)); err != nil {
						return nil, err
					}
					ref, err := objectstore.Put(ctx, buf)
					if err != nil {
						return nil, fmt.Errorf("fill the store: %w", err)
					}
					refs = append(refs, ref)
				}
				// The first puts were spilled (least recently used): get those.
				after, err := r.localStore(ctx)
				if err != nil {
					return nil, err
				}
				spilled := int(after.GetSpilledObjects())
				if spilled == 0 {
					return nil, errors.New("nothing was spilled after putting 1.25 × the store's capacity")
				}
				spilled = min(spilled, len(refs))
				i := 0
				return func(ctx context.Context, _ *stopwatch) error {
					b, err := refs[i%spilled].Get(ctx)
					i++
					if err != nil {
						return err
					}
					if len(b) != obj {
						return fmt.Errorf("got %d bytes, want %d", len(b), obj)
					}
					return nil
				}, nil
			})},
	}
}
