package core

import (
	"testing"

	"github.com/goray/goray/internal/ids"
	pb "github.com/goray/goray/proto/goray/v1"
)

// The locations of a replicated object: the reader's node first when it
// holds a copy, each copy as a location of its own, and a location moved
// to another copy forgets the first copy's arena offset.
func TestReplicaLocations(t *testing.T) {
	a, b, c := ids.NewNodeID(), ids.NewNodeID(), ids.NewNodeID()
	rep := func(n ids.NodeID, addr string) *pb.ObjectReplica {
		return &pb.ObjectReplica{NodeId: n[:], RayletAddress: addr}
	}
	loc := &pb.ObjectLocation{NodeId: a[:], RayletAddress: "a", Size: 10, InArena: true, ArenaOffset: 4096,
		Replicas: []*pb.ObjectReplica{rep(b, "b"), rep(c, "c")}}
	order := func(l *pb.ObjectLocation) string {
		s := l.GetRayletAddress()
		for _, r := range l.GetReplicas() {
			s += r.GetRayletAddress()
		}
		return s
	}
	if got := order(nearestFirst(loc, b)); got != "bac" {
		t.Errorf("nearest first on b: got %q, want bac", got)
	}
	if got := nearestFirst(loc, b); got.GetInArena() || got.GetArenaOffset() != 0 || got.GetSize() != 10 {
		t.Errorf("moved to b: got %v, want a's size and no arena offset", got)
	}
	if got := order(nearestFirst(loc, a)); got != "abc" {
		t.Errorf("nearest first on a: got %q, want abc", got)
	}
	if got := order(nearestFirst(loc, ids.NewNodeID())); got != "abc" {
		t.Errorf("nearest first on a node without a copy: got %q, want abc", got)
	}
	var all []string
	for _, l := range copiesOf(loc) {
		all = append(all, order(l))
	}
	if len(all) != 3 || all[0] != "abc" || all[1] != "bac" || all[2] != "cab" {
		t.Errorf("copies: got %v, want [abc bac cab]", all)
	}
	if got := copiesOf(&pb.ObjectLocation{RayletAddress: "x"}); len(got) != 1 {
		t.Errorf("copies of an object without replicas: got %d, want 1", len(got))
	}
}
