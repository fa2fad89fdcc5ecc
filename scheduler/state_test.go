package scheduler

import (
	"testing"

	pb "github.com/goray/goray/proto/goray/v1"
)

type fakeStateNodes struct{}

func (fakeStateNodes) infos() []*pb.NodeInfo { return []*pb.NodeInfo{{Address: "a"}} }
func (fakeStateNodes) infeasible() []*pb.InfeasibleRequest {
	return []*pb.InfeasibleRequest{{Kind: "task", Name: "lease"}}
}

type fakeStateActors struct{}

func (fakeStateActors) list() []*pb.ActorInfo { return []*pb.ActorInfo{{}, {}} }
func (fakeStateActors) waitingInfeasible() []*pb.InfeasibleRequest {
	return []*pb.InfeasibleRequest{{Kind: "actor", Name: "big"}}
}

type fakeStatePGs struct{}

func (fakeStatePGs) snapshot() ([]*pb.PlacementGroupInfo, []*pb.InfeasibleRequest) {
	return []*pb.PlacementGroupInfo{{Name: "g"}}, []*pb.InfeasibleRequest{{Kind: "placement_group", Name: "g"}}
}

func TestStateViewAssemblesSnapshots(t *testing.T) {
	v := stateView{stateSources{nodes: fakeStateNodes{}, actors: fakeStateActors{}, pgs: fakeStatePGs{}}}
	got := v.clusterState()
	if len(got.GetNodes()) != 1 || len(got.GetActors()) != 2 || len(got.GetPlacementGroups()) != 1 {
		t.Fatalf("got %d nodes, %d actors, %d groups, want 1, 2, 1", len(got.GetNodes()), len(got.GetActors()), len(got.GetPlacementGroups()))
	}
	var kinds []string
	for _, r := range got.GetInfeasible() {
		kinds = append(kinds, r.GetKind())
	}
	if want := []string{"placement_group", "actor", "task"}; len(kinds) != 3 || kinds[0] != want[0] || kinds[1] != want[1] || kinds[2] != want[2] {
		t.Fatalf("got infeasible kinds %v, want %v (groups, waiting actors, raylets' requests)", kinds, want)
	}
}
