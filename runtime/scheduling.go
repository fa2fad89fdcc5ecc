package runtime

import (
	"context"
	"encoding/hex"
	"fmt"

	"github.com/goray/goray/internal/core"
	"github.com/goray/goray/internal/errs"
	"github.com/goray/goray/internal/ids"
	pb "github.com/goray/goray/proto/goray/v1"
)

// Strategy says where an actor or task may run: pass it with
// actor.WithStrategy or task.WithStrategy. The zero Strategy is the default.
type Strategy struct{ p *pb.SchedulingStrategy }

// Proto is the strategy on the wire (nil for the default).
func (s Strategy) Proto() *pb.SchedulingStrategy { return s.p }

// DefaultStrategy is Ray's hybrid policy: the caller's node while it is
// under half used, else one of the least-used nodes that fit.
func DefaultStrategy() Strategy { return Strategy{} }

// SpreadStrategy spreads work over the nodes that fit it, least loaded first.
func SpreadStrategy() Strategy {
	return Strategy{&pb.SchedulingStrategy{Kind: pb.SchedulingStrategy_KIND_SPREAD}}
}

// NodeAffinity runs work on the node with the given ID (as Node.ID and
// CurrentNodeID give it). Hard (soft false): if that node is dead or can
// never fit the work, it fails with ErrInfeasible. Soft: it runs elsewhere.
func NodeAffinity(nodeID string, soft bool) Strategy {
	b, _ := hex.DecodeString(nodeID)
	return Strategy{&pb.SchedulingStrategy{Kind: pb.SchedulingStrategy_KIND_NODE_AFFINITY, NodeId: b, Soft: soft}}
}

// Node is one node of the cluster.
type Node struct {
	ID        string
	Address   string
	Alive     bool
	Total     map[string]float64
	Available map[string]float64
}

// Nodes lists the cluster's nodes, dead ones included.
func Nodes(ctx context.Context) ([]Node, error) {
	c, err := core.Current()
	if err != nil {
		return nil, err
	}
	resp, err := c.Head().ListNodes(ctx, &pb.ListNodesRequest{})
	if err != nil {
		return nil, fmt.Errorf("list nodes: %w", errs.FromStatus(err))
	}
	out := make([]Node, len(resp.GetNodes()))
	for i, n := range resp.GetNodes() {
		out[i] = Node{ID: hex.EncodeToString(n.GetNodeId()), Address: n.GetAddress(), Alive: n.GetAlive(),
			Total: n.GetTotal().GetAmounts(), Available: n.GetAvailable().GetAmounts()}
	}
	return out, nil
}

// CurrentNodeID is the ID of the node this process runs on ("" before Init).
func CurrentNodeID() string {
	c, err := core.Current()
	if err != nil {
		return ""
	}
	return c.NodeID().String()
}

// PlacementStrategy says how a placement group's bundles go onto nodes.
type PlacementStrategy int32

// Placement strategies (Ray's).
const (
	// Pack puts the bundles on as few nodes as possible.
	Pack = PlacementStrategy(pb.PlacementStrategy_PLACEMENT_STRATEGY_PACK)
	// Spread puts the bundles on distinct nodes where possible.
	Spread = PlacementStrategy(pb.PlacementStrategy_PLACEMENT_STRATEGY_SPREAD)
	// StrictPack puts every bundle on one node, or the group is infeasible.
	StrictPack = PlacementStrategy(pb.PlacementStrategy_PLACEMENT_STRATEGY_STRICT_PACK)
	// StrictSpread puts every bundle on a distinct node, or the group is
	// infeasible.
	StrictSpread = PlacementStrategy(pb.PlacementStrategy_PLACEMENT_STRATEGY_STRICT_SPREAD)
)

// PlacementGroup is a set of resource bundles reserved together, all or
// none, into which actors and tasks can be placed.
type PlacementGroup struct {
	id   ids.PlacementGroupID
	name string
}

// ID is the group's ID in hex.
func (g *PlacementGroup) ID() string { return g.id.String() }

// Bundle places work in bundle i of the group (i < 0: any of its bundles).
func (g *PlacementGroup) Bundle(i int) Strategy {
	return Strategy{&pb.SchedulingStrategy{Kind: pb.SchedulingStrategy_KIND_PLACEMENT_GROUP,
		PlacementGroupId: g.id[:], BundleIndex: int32(i)}}
}

// CreatePlacementGroup asks the head to reserve bundles of resources, e.g.
// []map[string]float64{{"CPU": 1}, {"CPU": 1}}, by strategy. It returns at
// once; Wait blocks until the group is ready.
func CreatePlacementGroup(ctx context.Context, name string, strategy PlacementStrategy, bundles ...map[string]float64) (*PlacementGroup, error) {
	c, err := core.Current()
	if err != nil {
		return nil, err
	}
	g := &PlacementGroup{id: ids.NewPlacementGroupID(c.JobID()), name: name}
	req := &pb.CreatePlacementGroupRequest{PlacementGroupId: g.id[:], Name: name,
		Strategy: pb.PlacementStrategy(strategy), JobId: func() []byte { j := c.JobID(); return j[:] }()}
	for _, b := range bundles {
		req.Bundles = append(req.Bundles, &pb.Resources{Amounts: b})
	}
	if _, err := c.Head().CreatePlacementGroup(ctx, req); err != nil {
		return nil, fmt.Errorf("create placement group %q: %w", name, errs.FromStatus(err))
	}
	return g, nil
}

// Wait blocks until every bundle is reserved. It fails with ErrInfeasible
// when no set of alive nodes can ever hold the group (nothing is reserved
// then), and with ctx's error if ctx ends first.
func (g *PlacementGroup) Wait(ctx context.Context) error {
	c, err := core.Current()
	if err != nil {
		return err
	}
	resp, err := c.Head().GetPlacementGroup(ctx, &pb.GetPlacementGroupRequest{PlacementGroupId: g.id[:], Wait: true})
	if err != nil {
		if ctx.Err() != nil {
			return fmt.Errorf("placement group %q: %w", g.name, errs.Context(ctx.Err(), "wait for the placement group"))
		}
		return fmt.Errorf("placement group %q: %w", g.name, errs.FromStatus(err))
	}
	info := resp.GetPlacementGroup()
	switch info.GetState() {
	case pb.PlacementGroupState_PLACEMENT_GROUP_STATE_CREATED:
		return nil
	case pb.PlacementGroupState_PLACEMENT_GROUP_STATE_INFEASIBLE:
		return errs.New(errs.KindInfeasible, g.name, "placement group %s: %s", g.id, info.GetReason())
	default:
		return errs.New(errs.KindNotFound, g.name, "placement group %s was removed", g.id)
	}
}

// Remove returns the group's bundles; actors and tasks running in it stop.
func (g *PlacementGroup) Remove(ctx context.Context) error {
	c, err := core.Current()
	if err != nil {
		return err
	}
	if _, err := c.Head().RemovePlacementGroup(ctx, &pb.RemovePlacementGroupRequest{PlacementGroupId: g.id[:]}); err != nil {
		return fmt.Errorf("remove placement group %q: %w", g.name, errs.FromStatus(err))
	}
	return nil
}
