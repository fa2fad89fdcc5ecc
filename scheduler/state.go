package scheduler

import pb "github.com/goray/goray/proto/goray/v1"

// stateSources are the managers the state API reads, each through a
// snapshot method that takes its owner's lock for the copy only.
type stateSources struct {
	nodes interface {
		infos() []*pb.NodeInfo
		infeasible() []*pb.InfeasibleRequest
	}
	actors interface {
		list() []*pb.ActorInfo
		waitingInfeasible() []*pb.InfeasibleRequest
	}
	pgs interface {
		snapshot() ([]*pb.PlacementGroupInfo, []*pb.InfeasibleRequest)
	}
}

// stateView is the state API (Ray's state aggregator): it owns no state and
// takes no lock of its own; it asks each manager for a snapshot. The
// snapshots are taken one after another, so a change between two of them
// may show in one and not yet in the other (each is consistent in itself).
// Callers: the GetClusterState handler.
type stateView struct{ src stateSources }

// clusterState lists nodes, actors, placement groups and the requests
// waiting as infeasible: placement groups first, then actors waiting for a
// node, then the lease requests the raylets hold.
func (v stateView) clusterState() *pb.GetClusterStateResponse {
	resp := &pb.GetClusterStateResponse{Nodes: v.src.nodes.infos(), Actors: v.src.actors.list()}
	groups, infeasible := v.src.pgs.snapshot()
	resp.PlacementGroups = groups
	resp.Infeasible = append(resp.Infeasible, infeasible...)
	resp.Infeasible = append(resp.Infeasible, v.src.actors.waitingInfeasible()...)
	resp.Infeasible = append(resp.Infeasible, v.src.nodes.infeasible()...)
	return resp
}
