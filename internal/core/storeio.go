package core

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"syscall"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/goray/goray/internal/errs"
	"github.com/goray/goray/internal/ids"
	"github.com/goray/goray/internal/store"
	pb "github.com/goray/goray/proto/goray/v1"
)

// How this process writes objects into its node's store and reads them
// back. The raylet owns the store's capacity: it evicts and spills objects
// to make room, and moves them between its arena and its spill files, so a
// reader never trusts an offset it was told earlier: it pins the object
// (PullObject with a pin), which restores a spilled object and returns where
// the object is now, reads it, and unpins it.

// storePayload writes p into the node's store and seals it with the raylet.
func (c *Core) storePayload(ctx context.Context, id ids.ObjectID, p *pb.Payload) (*pb.ObjectLocation, error) {
	if loc, ok, err := c.storeInArena(ctx, id, p); ok || err != nil {
		return loc, err
	}
	// The node has no arena: a file of its own in the store directory.
	if err := store.Write(c.storeDir, id, p.GetData()); err != nil {
		if errors.Is(err, syscall.ENOSPC) {
			return nil, errs.New(errs.KindObjectStoreFull, "", "put object %s (%d bytes): the file system under the node's store directory %s is full (no space left on device); free space there, or give the raylet an arena (--object-store-memory), which spills to disk when full",
				id, len(p.GetData()), c.storeDir)
		}
		return nil, err
	}
	if _, err := c.node.SealObject(ctx, &pb.SealObjectRequest{ObjectId: id[:], Size: uint64(len(p.GetData())), JobId: c.jobID[:]}); err != nil {
		_ = store.Remove(c.storeDir, id)
		return nil, fmt.Errorf("seal object %s with the raylet: %w", id, errs.FromStatus(err))
	}
	return &pb.ObjectLocation{NodeId: c.nodeID[:], RayletAddress: c.raylet, Size: uint64(len(p.GetData())),
		Encoding: p.GetEncoding(), TypeUrl: p.GetTypeUrl()}, nil
}

// storeInArena writes p into a region of the node's shared-memory arena
// (one copy, into pages that are already there) and seals it. The raylet
// makes room for it (evicting, spilling) or fails it with
// ErrObjectStoreFull; ok is false only when the node has no arena: the
// caller writes a file.
func (c *Core) storeInArena(ctx context.Context, id ids.ObjectID, p *pb.Payload) (*pb.ObjectLocation, bool, error) {
	size := uint64(len(p.GetData()))
	if c.noArena.Load() || size == 0 {
		return nil, false, nil
	}
	m, err := store.OpenArena(c.storeDir)
	if err != nil {
		c.noArena.Store(true) // the raylet runs without one
		return nil, false, nil
	}
	resp, err := c.node.AllocateObject(ctx, &pb.AllocateObjectRequest{ObjectId: id[:], Size: size, JobId: c.jobID[:], AcceptSpillFile: true})
	if err != nil {
		if status.Code(err) == codes.Unimplemented {
			c.noArena.Store(true)
			return nil, false, nil
		}
		return nil, false, fmt.Errorf("put object %s into the node's store: %w", id, errs.FromStatus(err))
	}
	loc := &pb.ObjectLocation{NodeId: c.nodeID[:], RayletAddress: c.raylet, Size: size,
		Encoding: p.GetEncoding(), TypeUrl: p.GetTypeUrl()}
	if resp.GetExists() {
		return loc, true, nil // stored here already (a re-run of its task)
	}
	if path := resp.GetSpillPath(); path != "" {
		if err := c.storeDirectSpill(ctx, id, path, p.GetData()); err != nil {
			return nil, false, err
		}
		return loc, true, nil
	}
	if !resp.GetOk() {
		return nil, false, nil
	}
	region, err := m.Region(resp.GetOffset(), size)
	if err != nil {
		_, _ = c.node.FreeObjects(context.WithoutCancel(ctx), &pb.FreeObjectsRequest{ObjectIds: [][]byte{id[:]}})
		return nil, false, fmt.Errorf("put object %s: map the node's arena: %w", id, err)
	}
	copy(region, p.GetData())
	if _, err := c.node.SealObject(ctx, &pb.SealObjectRequest{ObjectId: id[:], Size: size, JobId: c.jobID[:]}); err != nil {
		_, _ = c.node.FreeObjects(context.WithoutCancel(ctx), &pb.FreeObjectsRequest{ObjectIds: [][]byte{id[:]}})
		return nil, false, fmt.Errorf("seal object %s with the raylet: %w", id, errs.FromStatus(err))
	}
	loc.InArena, loc.ArenaOffset = true, resp.GetOffset()
	return loc, true, nil
}

// storeDirectSpill writes an object the raylet had no arena room for
// straight into the spill file it named, and seals it: one write, where
// waiting for room would have cost a spill and a copy.
func (c *Core) storeDirectSpill(ctx context.Context, id ids.ObjectID, path string, data []byte) error {
	fail := func(err error) error {
		_ = os.Remove(path)
		_, _ = c.node.FreeObjects(context.WithoutCancel(ctx), &pb.FreeObjectsRequest{ObjectIds: [][]byte{id[:]}})
		return err
	}
	f, err := os.OpenFile(path, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o600)
	if err != nil {
		return fail(fmt.Errorf("put object %s: the node's store is full and its spill file cannot be created: %w", id, err))
	}
	_, err = f.Write(data)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		if errors.Is(err, syscall.ENOSPC) {
			return fail(errs.New(errs.KindObjectStoreFull, "", "put object %s (%d bytes): the node's store is full and the file system of its spill directory (%s) has no space left; free space there, release objects, or raise the raylet's --object-store-memory",
				id, len(data), filepath.Dir(path)))
		}
		return fail(fmt.Errorf("put object %s: write its spill file: %w", id, err))
	}
	if _, err := c.node.SealObject(ctx, &pb.SealObjectRequest{ObjectId: id[:], Size: uint64(len(data)), JobId: c.jobID[:]}); err != nil {
		return fail(fmt.Errorf("seal object %s with the raylet: %w", id, errs.FromStatus(err)))
	}
	return nil
}

// readStored reads an object from the store, pulling it to this node first
// when it lives on another, restoring it when it was spilled. The raylet
// pins the object where it is while this process reads it. With view, raw
// bytes in the arena come back as a read-only view of it, not a copy, and
// the object stays pinned in the arena until it is freed (see package
// store for the view's rules); otherwise the bytes are copied out and the
// pin dropped before readStored returns.
func (c *Core) readStored(ctx context.Context, id ids.ObjectID, loc *pb.ObjectLocation, view bool) (*pb.Payload, error) {
	nid, err := ids.ParseNodeID(loc.GetNodeId())
	if err != nil {
		return nil, err
	}
	raw := loc.GetEncoding() == pb.Encoding_ENCODING_RAW
	mode := pb.PinMode_PIN_MODE_READ
	if view && raw {
		mode = pb.PinMode_PIN_MODE_VIEW
	}
	// A copy is made anyway unless it is a view: a spilled object is then
	// read straight from its spill file (one copy, and nothing evicted to
	// restore it); a view needs it restored into the arena.
	resp, err := c.node.PullObject(ctx, &pb.PullObjectRequest{ObjectId: id[:], Location: loc, JobId: c.jobID[:], Pin: mode,
		ReadSpilled: mode == pb.PinMode_PIN_MODE_READ})
	if err != nil {
		if ctx.Err() != nil {
			return nil, errs.Context(ctx.Err(), "get object "+id.String())
		}
		if nid == c.nodeID {
			return nil, fmt.Errorf("read object %s from the node's store: %w", id, errs.FromStatus(err))
		}
		return nil, fmt.Errorf("pull object %s from node %s: %w", id, nid, errs.FromStatus(err))
	}
	if mode == pb.PinMode_PIN_MODE_READ {
		defer c.unpin(ctx, id)
	}
	local := resp.GetLocal()
	if path := resp.GetSpillPath(); path != "" {
		data, err := readSpillFile(path, resp.GetSpillOffset(), local.GetSize())
		if err != nil {
			return nil, errs.New(errs.KindObjectLost, "", "object %s: read its spill file: %v", id, err)
		}
		return &pb.Payload{Encoding: loc.GetEncoding(), TypeUrl: loc.GetTypeUrl(), Data: data}, nil
	}
	if local.GetInArena() {
		m, err := store.OpenArena(c.storeDir)
		var data []byte
		if err == nil {
			data, err = m.View(local.GetArenaOffset(), local.GetSize())
		}
		if err != nil {
			return nil, errs.New(errs.KindObjectLost, "", "object %s is no longer in the node's store: %v", id, err)
		}
		if mode == pb.PinMode_PIN_MODE_READ {
			// Copy the bytes out while the pin holds them: once unpinned,
			// the region may be spilled and reused. (Raw bytes must be a
			// copy anyway: a write to the view would fault.)
			data = bytes.Clone(data)
		}
		return &pb.Payload{Encoding: loc.GetEncoding(), TypeUrl: loc.GetTypeUrl(), Data: data}, nil
	}
	data, err := store.Read(c.storeDir, id)
	if err != nil {
		return nil, errs.New(errs.KindObjectLost, "", "object %s is no longer in the node's store: %v", id, err)
	}
	return &pb.Payload{Encoding: loc.GetEncoding(), TypeUrl: loc.GetTypeUrl(), Data: data}, nil
}

// readSpillFile reads size bytes at off of a spill file, in one read.
func readSpillFile(path string, off, size uint64) ([]byte, error) {
	if size > maxSpilledRead {
		return nil, fmt.Errorf("%d bytes is more than a spilled object can be (%d)", size, uint64(maxSpilledRead))
	}
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	b := make([]byte, size)
	n, err := f.ReadAt(b, int64(off))
	if uint64(n) == size {
		return b, nil
	}
	if err == nil {
		err = fmt.Errorf("read %d of %d bytes", n, size)
	}
	return nil, err
}

// maxSpilledRead bounds what readSpillFile allocates on a raylet's word.
const maxSpilledRead = 1 << 40

// unpin drops the read pin readStored took, even when ctx has ended.
func (c *Core) unpin(ctx context.Context, id ids.ObjectID) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
	defer cancel()
	if _, err := c.node.UnpinObjects(ctx, &pb.UnpinObjectsRequest{ObjectIds: [][]byte{id[:]}}); err != nil {
		c.log.Debug("unpin object", "object", id, "err", errs.FromStatus(err))
	}
}
