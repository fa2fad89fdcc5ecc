package raylet

import (
	"context"
	"errors"
	"time"

	"github.com/goray/goray/internal/errs"
	"github.com/goray/goray/internal/ids"
	pb "github.com/goray/goray/proto/goray/v1"
)

// reportTimeout bounds a report of an unreachable peer to the head (whose
// probe of the peer takes at most 1 s).
const reportTimeout = 5 * time.Second

// pullUnreachable is the error of a pull of object id that could not reach
// the raylet holding it (loc): the raylet reports the holder's node to the
// head (NodeRegistryService.ReportUnreachable), which probes it and
// declares it dead at once when its raylet refuses the head too; a node
// the head holds dead is marked so in this raylet's cluster view at once,
// so that leases (a rebuild of the object, say) stop spilling back there
// before the next heartbeat says so. The reader gets ErrObjectLost either
// way: the object cannot be read where its location says, and its owner
// rebuilds it from lineage when it can. Other errors pass unchanged.
func (r *Raylet) pullUnreachable(ctx context.Context, id ids.ObjectID, loc *pb.ObjectLocation, err error) error {
	if !errors.Is(err, errs.ErrUnavailable) {
		return err
	}
	dead := false
	if r.head != nil {
		rctx, cancel := context.WithTimeout(ctx, reportTimeout)
		resp, rerr := r.head.ReportUnreachable(rctx, &pb.ReportUnreachableRequest{NodeId: loc.GetNodeId(), Address: loc.GetRayletAddress()})
		cancel()
		if rerr != nil {
			r.log.Debug("report an unreachable raylet to the head", "address", loc.GetRayletAddress(), "err", rerr)
		}
		dead = rerr == nil && resp.GetDead()
	}
	var lost *errs.Error
	if dead {
		r.view.markDead(loc.GetNodeId())
		lost = errs.New(errs.KindObjectLost, "", "object %s was lost with its node: the raylet at %s that held it is gone (the head declared its node dead)", id, loc.GetRayletAddress())
	} else {
		lost = errs.New(errs.KindObjectLost, "", "object %s: the raylet at %s that holds it cannot be reached: %v", id, loc.GetRayletAddress(), err)
	}
	lost.NodeID = loc.GetNodeId()
	return lost
}

// reportUnreachable tells the head that the raylet of node at addr could
// not be reached (a pull went past it to a replica), marking the node dead
// in this raylet's view when the head declares it so.
func (r *Raylet) reportUnreachable(node []byte, addr string) {
	if r.head == nil {
		return
	}
	ctx, cancel := context.WithTimeout(r.ctx, reportTimeout)
	defer cancel()
	resp, err := r.head.ReportUnreachable(ctx, &pb.ReportUnreachableRequest{NodeId: node, Address: addr})
	if err != nil {
		r.log.Debug("report an unreachable raylet to the head", "address", addr, "err", err)
		return
	}
	if resp.GetDead() {
		r.view.markDead(node)
	}
}

// knownPeer checks that addr is the raylet of a node the head registered
// (node, when given, its ID), asking the head for the node table once when
// this raylet's view does not have it: a raylet pulls only from nodes of
// its cluster, so a forged location cannot make it dial anyone else with
// the cluster's credentials, nor store what they send.
func (r *Raylet) knownPeer(ctx context.Context, node []byte, addr string) error {
	if r.head == nil {
		return nil // no cluster to check against (a raylet on its own, in tests)
	}
	has := func() bool {
		nodes, _ := r.view.snapshot()
		for _, n := range nodes {
			if n.GetAddress() == addr && (len(node) == 0 || string(n.GetNodeId()) == string(node)) {
				return true
			}
		}
		return false
	}
	if has() {
		return nil
	}
	_, _, _ = r.viewRefresh.Do("", func() (any, error) {
		r.refreshView(ctx)
		return nil, nil
	})
	if has() {
		return nil
	}
	return errs.New(errs.KindInvalidArgument, "", "%s is not the raylet of a node of this cluster (the head has no such node): a raylet pulls objects only from the nodes the head registered", addr)
}
