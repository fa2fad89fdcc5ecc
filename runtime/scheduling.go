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

// Strategy says where an actor or task may run: pass it with WithStrategy.
// The zero Strategy is the default.
type Strategy struct{ p *pb.SchedulingStrategy }

// SchedulingOption is an option that actors and tasks share: it is both an
// actor.Option (of actor.Spawn and actor.SpawnName) and a task.Option (of a
// task's Remote), so one value serves both:
//
//	gpu := runtime.WithDemand(map[string]float64{"GPU": 1})
//	h, err := actor.Spawn(ctx, TrainerType, gpu)
//	ref := train.Remote(ctx, objectstore.Val(batch), gpu)
//
// actor.WithResources, actor.WithStrategy, actor.WithFailFast and their task
// namesakes return these same options. Options are opaque: make them with
// WithDemand, WithStrategy and WithFailFast.
type SchedulingOption interface {
	actorOption
	taskOption
}

type (
	actorOption = core.ActorOption
	taskOption  = core.TaskOption
)

// WithDemand sets the resources an actor or task asks for, e.g.
// {"CPU": 2, "GPU": 1}: only a node whose total resources hold every amount
// can run it. Amounts must be finite and not negative; names are
// case-sensitive. With a placement group's Bundle as the strategy, the
// amounts come out of that bundle's reservation. Default for a task:
// {"CPU": 1}, held while it runs. Default for an actor: it needs a node with
// 1 CPU to be placed and holds nothing while it lives (Ray's default); with
// WithDemand it holds what it asks for as long as it lives.
//
// It is named apart from WithResources, the Init option that says what the
// embedded node offers: WithDemand is what work asks for.
func WithDemand(r map[string]float64) SchedulingOption {
	return core.PlacementOption(func(p *core.Placement) { p.Resources = r })
}

// WithStrategy says where an actor or task may be placed: DefaultStrategy,
// SpreadStrategy, NodeAffinity, or a placement group's Bundle. Default:
// DefaultStrategy, Ray's hybrid policy.
func WithStrategy(s Strategy) SchedulingOption {
	return core.PlacementOption(func(p *core.Placement) { p.Strategy = s.p })
}

// WithFailFast makes actor.Spawn, or a task's ref, fail at once with
// ErrInfeasible when no node can ever fit the actor or task. Default: it
// waits — logged, and listed as infeasible by ClusterState — until a node
// that fits joins.
func WithFailFast() SchedulingOption {
	return core.PlacementOption(func(p *core.Placement) { p.FailFast = true })
}

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
	Pack PlacementStrategy = iota + 1
	// Spread puts the bundles on distinct nodes where possible.
	Spread
	// StrictPack puts every bundle on one node, or the group is infeasible.
	StrictPack
	// StrictSpread puts every bundle on a distinct node, or the group is
	// infeasible.
	StrictSpread
)

// proto is the strategy on the wire; an unknown value is sent as is, and the
// head refuses it.
func (s PlacementStrategy) proto() pb.PlacementStrategy {
	switch s {
	case Pack:
		return pb.PlacementStrategy_PLACEMENT_STRATEGY_PACK
	case Spread:
		return pb.PlacementStrategy_PLACEMENT_STRATEGY_SPREAD
	case StrictPack:
		return pb.PlacementStrategy_PLACEMENT_STRATEGY_STRICT_PACK
	case StrictSpread:
		return pb.PlacementStrategy_PLACEMENT_STRATEGY_STRICT_SPREAD
	}
	return pb.PlacementStrategy(s)
}

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
		Strategy: strategy.proto(), JobId: func() []byte { j := c.JobID(); return j[:] }()}
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
