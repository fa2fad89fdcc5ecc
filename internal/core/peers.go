package core

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"sync"
	"sync/atomic"
	"time"

	"github.com/goray/goray/internal/errs"
	"github.com/goray/goray/internal/ids"
	"github.com/goray/goray/internal/rpc"
	"github.com/goray/goray/internal/sched"
	pb "github.com/goray/goray/proto/goray/v1"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// This file is how the core worker fails fast when a peer is gone (Ray's
// core worker asks the GCS in the same spirit): a process whose connection
// to a raylet, or to an actor's worker, is refused or reset tells the head
// (NodeRegistryService.ReportUnreachable), which probes the node's raylet
// itself and declares the node dead at once when it refuses the head too.
// The caller then learns the outcome from the head (the actor restarted or
// died) instead of waiting for the node's heartbeat deadline.
//
// When the node that is gone is this process's own (a driver whose raylet
// died), the process carries on without it: task leases go to another live
// raylet (localNode.substitute), stored objects are read from the raylets
// that hold them straight into memory (pullWithoutNode), and a large Put,
// which needs the node's object store, fails with ErrNodeDied saying so.

// reportTimeout bounds a report to the head (whose probe takes at most 1 s).
const reportTimeout = 5 * time.Second

// localNode is what this process knows about its own node once its raylet
// stopped answering. The lease client and the object paths call it from any
// goroutine; gone is set once and never cleared; mu guards the substitute.
type localNode struct {
	gone atomic.Bool

	mu         sync.Mutex
	substitute *rpc.NodeClient // guarded by mu: the raylet leases go to now
	subNode    []byte          // guarded by mu: its node ID
	subAddr    string          // guarded by mu: its address
}

// reportUnreachable tells the head that the raylet of node, or a worker on
// it at addr, could not be reached, and returns whether the head holds the
// node dead now (after probing it). Any failure to ask counts as not dead:
// the caller then goes on as it did before (retrying, or waiting for the
// head's node timeout).
func (c *Core) reportUnreachable(ctx context.Context, node []byte, addr string) bool {
	if c.head == nil || len(node) == 0 {
		return false
	}
	ctx, cancel := context.WithTimeout(ctx, reportTimeout)
	defer cancel()
	resp, err := c.head.ReportUnreachable(ctx, &pb.ReportUnreachableRequest{NodeId: node, Address: addr})
	if err != nil {
		c.log.Debug("report an unreachable peer to the head", "node", fmt.Sprintf("%x", node), "address", addr, "err", err)
		return false
	}
	if resp.GetDead() && bytes.Equal(node, c.nodeID[:]) && c.local.gone.CompareAndSwap(false, true) {
		c.log.Warn("this process's raylet is gone (the head declared its node dead): tasks go to other raylets, stored objects are read from theirs, large puts fail", "node", c.nodeID, "raylet", c.raylet)
	}
	return resp.GetDead()
}

// transportDown reports whether err is a failure to reach a peer at all (a
// refused or reset connection), not an answer from it.
func transportDown(err error) bool { return errors.Is(err, errs.ErrUnavailable) }

// localNodeGone reports whether this process's node is gone: already known,
// or — when err looks like it (the raylet unreachable, its store directory
// missing) — confirmed by the head now.
func (c *Core) localNodeGone(ctx context.Context, err error) bool {
	if c.local.gone.Load() {
		return true
	}
	if c.worker || c.node == nil || !(transportDown(err) || errors.Is(err, fs.ErrNotExist)) {
		return false // a worker never outlives its raylet
	}
	return c.reportUnreachable(ctx, c.nodeID[:], c.raylet)
}

// errLocalNodeGone is the error of an operation (what) that needs this
// process's node, which is gone.
func (c *Core) errLocalNodeGone(what string, cause error) error {
	e := errs.New(errs.KindNodeDied, "", "%s: this process's node %s is gone (its raylet at %s is unreachable and the head declared the node dead), and with it the node's object store: values of %d bytes or more can no longer be stored from this process; restart the driver on a node with a raylet (cause: %v)", what, c.nodeID, c.raylet, InlineLimit, cause)
	e.NodeID = c.nodeID[:]
	return e
}

// leaseRaylet is the raylet a lease request starts at: the local raylet, or
// once the local node is gone a substitute (see substituteRaylet).
func (c *Core) leaseRaylet(ctx context.Context, req *pb.RequestWorkerLeaseRequest) (client *rpc.NodeClient, node []byte, addr string, err error) {
	if !c.local.gone.Load() {
		return c.node, c.nodeID[:], c.raylet, nil
	}
	c.local.mu.Lock()
	client, node, addr = c.local.substitute, c.local.subNode, c.local.subAddr
	c.local.mu.Unlock()
	if client != nil {
		return client, node, addr, nil
	}
	return c.substituteRaylet(ctx, req)
}

// substituteRaylet picks the raylet lease requests go to while this
// process's own is gone: an alive node from the head's table whose total
// resources fit req (any alive node when none does: it answers infeasible),
// which may spill requests back to others. With no alive node the error is
// ErrNodeDied: nothing can run the task.
func (c *Core) substituteRaylet(ctx context.Context, req *pb.RequestWorkerLeaseRequest) (*rpc.NodeClient, []byte, string, error) {
	lctx, cancel := context.WithTimeout(ctx, reportTimeout)
	resp, err := c.head.ListNodes(lctx, &pb.ListNodesRequest{})
	cancel()
	if err != nil {
		return nil, nil, "", fmt.Errorf("this process's node %s is gone and the head did not list the others: %w", c.nodeID, errs.FromStatus(err))
	}
	var pick *pb.NodeInfo
	for _, n := range resp.GetNodes() {
		if !n.GetAlive() || n.GetAddress() == "" || bytes.Equal(n.GetNodeId(), c.nodeID[:]) {
			continue
		}
		fits := sched.Resources(req.GetResources().GetAmounts()).FitsIn(n.GetTotal().GetAmounts())
		if pick == nil || fits && !sched.Resources(req.GetResources().GetAmounts()).FitsIn(pick.GetTotal().GetAmounts()) {
			pick = n
		}
	}
	if pick == nil {
		e := errs.New(errs.KindNodeDied, req.GetFunctionName(), "this process's node %s is gone (its raylet at %s is unreachable and the head declared the node dead) and no other node is alive to run tasks: start a raylet that joins the head", c.nodeID, c.raylet)
		e.NodeID = c.nodeID[:]
		return nil, nil, "", e
	}
	cc, err := c.conns.get(pick.GetAddress())
	if err != nil {
		return nil, nil, "", err
	}
	client := rpc.NewNodeClient(cc)
	c.local.mu.Lock()
	c.local.substitute, c.local.subNode, c.local.subAddr = client, pick.GetNodeId(), pick.GetAddress()
	c.local.mu.Unlock()
	c.log.Warn("this process's raylet is gone; leasing workers from another node", "node", fmt.Sprintf("%x", pick.GetNodeId()), "raylet", pick.GetAddress())
	return client, pick.GetNodeId(), pick.GetAddress(), nil
}

// leaseTargetDown handles a lease request's failure to reach the raylet of
// node at addr: it reports it to the head, and reports whether the request
// should start again at once (the local raylet or the substitute is gone:
// leaseRaylet now gives another).
func (c *Core) leaseTargetDown(ctx context.Context, node []byte, addr string) bool {
	dead := c.reportUnreachable(ctx, node, addr)
	if !dead {
		return false
	}
	if bytes.Equal(node, c.nodeID[:]) {
		return true
	}
	c.local.mu.Lock()
	defer c.local.mu.Unlock()
	if c.local.substitute != nil && bytes.Equal(c.local.subNode, node) {
		c.local.substitute, c.local.subNode, c.local.subAddr = nil, nil, ""
		return true
	}
	return false
}

// leaseRetriable reports whether a lease request that failed with err is
// asked again: a raylet could not be reached, or is stopping, which the
// cluster view may not know yet. An ErrNodeDied naming a node (this
// process's own is gone and no other is alive) is final.
func leaseRetriable(err error) bool {
	var ge *errs.Error
	if errors.As(err, &ge) && ge.Kind == errs.KindNodeDied && len(ge.NodeID) > 0 {
		return false
	}
	return status.Code(err) == codes.Unavailable
}

// pullWithoutNode reads object id from the raylet that holds it (loc)
// straight into this process's memory over ObjectTransferService.Pull: how
// a process whose own node is gone reads stored objects. A copy that lived
// on this process's node is lost with it, and one whose holder cannot be
// reached is lost there (the holder is reported to the head): both are
// ErrObjectLost, which the caller treats as any lost copy (the owner
// rebuilds the object from lineage when it can). Memory follows the bytes
// received, and the stream must match the location's size.
func (c *Core) pullWithoutNode(ctx context.Context, id ids.ObjectID, loc *pb.ObjectLocation) (*pb.Payload, error) {
	if bytes.Equal(loc.GetNodeId(), c.nodeID[:]) {
		return nil, errs.New(errs.KindObjectLost, "", "object %s was lost with this process's node %s (its raylet at %s is gone)", id, c.nodeID, c.raylet)
	}
	addr := loc.GetRayletAddress()
	lost := func(format string, args ...any) error {
		return errs.New(errs.KindObjectLost, "", "object %s from the raylet at %s that holds it: %s", id, addr, fmt.Sprintf(format, args...))
	}
	cc, err := c.conns.get(addr)
	if err != nil {
		return nil, lost("%v", err)
	}
	stream, err := pb.NewObjectTransferServiceClient(cc).Pull(ctx, &pb.PullRequest{ObjectId: id[:], ChunkSize: pullWithoutNodeChunk})
	var data []byte
	for err == nil {
		var msg *pb.PullResponse
		if msg, err = stream.Recv(); err != nil {
			break
		}
		switch size := msg.GetTotalSize(); {
		case loc.GetSize() != 0 && size != loc.GetSize():
			return nil, lost("it is %d bytes there, its location says %d", size, loc.GetSize())
		case msg.GetOffset() != uint64(len(data)):
			return nil, lost("a chunk at offset %d, want %d", msg.GetOffset(), len(data))
		case uint64(len(data))+uint64(len(msg.GetData())) > size:
			return nil, lost("more than its %d bytes", size)
		}
		data = append(data, msg.GetData()...)
	}
	switch {
	case errors.Is(err, io.EOF):
	case ctx.Err() != nil:
		return nil, errs.Context(ctx.Err(), "get object "+id.String())
	default:
		if transportDown(err) {
			c.reportUnreachable(ctx, loc.GetNodeId(), addr)
		}
		return nil, lost("%v", err)
	}
	if uint64(len(data)) != loc.GetSize() {
		return nil, lost("got %d bytes, its location says %d", len(data), loc.GetSize())
	}
	return &pb.Payload{Encoding: loc.GetEncoding(), TypeUrl: loc.GetTypeUrl(), Data: data}, nil
}

// pullWithoutNodeChunk is the chunk size pullWithoutNode asks for (the
// holder caps it at 4 MiB).
const pullWithoutNodeChunk = 4 << 20
