package raylet

import (
	"slices"
	"testing"

	"github.com/goray/goray/internal/ids"
	pb "github.com/goray/goray/proto/goray/v1"
)

// A pull reads from the location's raylet, then its replicas', never from
// this node, each raylet once.
func TestPullSources(t *testing.T) {
	self, a, b := ids.NewNodeID(), ids.NewNodeID(), ids.NewNodeID()
	loc := &pb.ObjectLocation{NodeId: self[:], RayletAddress: "self", Replicas: []*pb.ObjectReplica{
		{NodeId: a[:], RayletAddress: "a"}, {NodeId: b[:], RayletAddress: "b"}, {NodeId: a[:], RayletAddress: "a"}, {RayletAddress: ""}}}
	var got []string
	for _, s := range pullSources(loc, self) {
		got = append(got, s.addr)
	}
	if !slices.Equal(got, []string{"a", "b"}) {
		t.Errorf("sources: got %v, want [a b]", got)
	}
	if n := len(pullSources(&pb.ObjectLocation{NodeId: self[:], RayletAddress: "self"}, self)); n != 0 {
		t.Errorf("sources of an object only here: got %d, want none", n)
	}
}
