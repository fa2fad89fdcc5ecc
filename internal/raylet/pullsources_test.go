package raylet

import (
	"errors"
	"net"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/goray/goray/internal/errs"

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

// A pull from a location whose raylet is not a node of the cluster is
// refused without dialling it: a forged location cannot make the raylet
// send the cluster's token to an address of the caller's choosing, nor
// store what it sends back (issue 14).
func TestPullOnlyFromClusterNodes(t *testing.T) {
	head := startTestHead(t, Config{
		Resources: map[string]float64{"CPU": 1},
		TokenFile: filepath.Join(t.TempDir(), "token"),
		Logger:    testLogger(t),
		Stderr:    t.Output(),
	}, headOpts{})
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer lis.Close()
	dialled := make(chan struct{}, 1)
	go func() {
		if c, err := lis.Accept(); err == nil {
			dialled <- struct{}{}
			c.Close()
		}
	}()
	job := ids.JobIDFromUint32(3)
	id := ids.NewTaskID(job).ObjectID(1)
	stranger := ids.NewNodeID()
	loc := &pb.ObjectLocation{NodeId: stranger[:], RayletAddress: lis.Addr().String(), Size: 3 << 20}
	_, err = nodeClient(t, head).PullObject(callCtx(t), &pb.PullObjectRequest{ObjectId: id[:], Location: loc, JobId: job[:], Pin: pb.PinMode_PIN_MODE_READ})
	if !errors.Is(errs.FromStatus(err), errs.ErrInvalidArgument) || !strings.Contains(err.Error(), "not the raylet of a node of this cluster") {
		t.Fatalf("PullObject from an address that is no node: got %v, want InvalidArgument saying so", err)
	}
	select {
	case <-dialled:
		t.Fatal("the raylet dialled the forged location")
	default:
	}
	// A node's own address under another node's ID is no better.
	loc.RayletAddress = head.Address()
	loc.Replicas = []*pb.ObjectReplica{{NodeId: stranger[:], RayletAddress: lis.Addr().String()}}
	if _, err := nodeClient(t, head).PullObject(callCtx(t), &pb.PullObjectRequest{ObjectId: id[:], Location: loc, JobId: job[:]}); err == nil {
		t.Fatal("PullObject of an object no node holds: got nil, want an error")
	}
	select {
	case <-dialled:
		t.Fatal("the raylet dialled a forged replica")
	default:
	}
}
