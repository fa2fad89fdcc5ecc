package runtime

import (
	"context"
	"encoding/hex"
	"fmt"

	"github.com/goray/goray/internal/core"
	"github.com/goray/goray/internal/errs"
	pb "github.com/goray/goray/proto/goray/v1"
)

// InfeasibleRequest is work that no alive node can ever fit, waiting for
// one that can to join (work created with WithFailFast fails instead).
type InfeasibleRequest struct {
	// Kind is "actor", "task" or "placement_group".
	Kind string
	// Name is the actor type, the function, or the group's name.
	Name      string
	Resources map[string]float64
	// Reason names the missing resource.
	Reason string
}

// PlacementGroupState is one placement group as the head sees it.
type PlacementGroupState struct {
	ID   string
	Name string
	// State is "PENDING", "CREATED", "INFEASIBLE" or "REMOVED".
	State string
	// BundleNodes holds the node ID of each bundle once the group is created.
	BundleNodes []string
}

// State is a snapshot of the cluster: the head's state API.
type State struct {
	Nodes           []Node
	PlacementGroups []PlacementGroupState
	// Infeasible lists the requests waiting because no alive node can ever
	// fit them.
	Infeasible []InfeasibleRequest
	// LiveActors is how many actors are pending or alive.
	LiveActors int
}

// ClusterState asks the head for the cluster's state: nodes, placement
// groups, live actors and the infeasible requests that wait.
func ClusterState(ctx context.Context) (*State, error) {
	c, err := core.Current()
	if err != nil {
		return nil, err
	}
	resp, err := c.Head().GetClusterState(ctx, &pb.GetClusterStateRequest{})
	if err != nil {
		return nil, fmt.Errorf("cluster state: %w", errs.FromStatus(err))
	}
	st := &State{}
	for _, n := range resp.GetNodes() {
		st.Nodes = append(st.Nodes, Node{ID: hex.EncodeToString(n.GetNodeId()), Address: n.GetAddress(), Alive: n.GetAlive(),
			Total: n.GetTotal().GetAmounts(), Available: n.GetAvailable().GetAmounts()})
	}
	for _, g := range resp.GetPlacementGroups() {
		st.PlacementGroups = append(st.PlacementGroups, pgState(g))
	}
	for _, r := range resp.GetInfeasible() {
		st.Infeasible = append(st.Infeasible, InfeasibleRequest{Kind: r.GetKind(), Name: r.GetName(),
			Resources: r.GetResources().GetAmounts(), Reason: r.GetReason()})
	}
	for _, a := range resp.GetActors() {
		if a.GetState() != pb.ActorState_ACTOR_STATE_DEAD {
			st.LiveActors++
		}
	}
	return st, nil
}

func pgState(g *pb.PlacementGroupInfo) PlacementGroupState {
	s := PlacementGroupState{ID: hex.EncodeToString(g.GetPlacementGroupId()), Name: g.GetName()}
	switch g.GetState() {
	case pb.PlacementGroupState_PLACEMENT_GROUP_STATE_PENDING:
		s.State = "PENDING"
	case pb.PlacementGroupState_PLACEMENT_GROUP_STATE_CREATED:
		s.State = "CREATED"
	case pb.PlacementGroupState_PLACEMENT_GROUP_STATE_INFEASIBLE:
		s.State = "INFEASIBLE"
	default:
		s.State = "REMOVED"
	}
	for _, n := range g.GetBundleNodeIds() {
		s.BundleNodes = append(s.BundleNodes, hex.EncodeToString(n))
	}
	return s
}

// BundleNodes returns the node ID of each of the group's bundles (empty
// until the group is created).
func (g *PlacementGroup) BundleNodes(ctx context.Context) ([]string, error) {
	c, err := core.Current()
	if err != nil {
		return nil, err
	}
	resp, err := c.Head().GetPlacementGroup(ctx, &pb.GetPlacementGroupRequest{PlacementGroupId: g.id[:]})
	if err != nil {
		return nil, fmt.Errorf("placement group %q: %w", g.name, errs.FromStatus(err))
	}
	return pgState(resp.GetPlacementGroup()).BundleNodes, nil
}
