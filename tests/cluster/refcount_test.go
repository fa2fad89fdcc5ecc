package cluster

import (
	"context"
	"runtime"
	"testing"
	"time"

	"github.com/goray/goray/internal/raylet"
	"github.com/goray/goray/internal/rpc"
	"github.com/goray/goray/internal/testwait"
	"github.com/goray/goray/objectstore"
	pb "github.com/goray/goray/proto/goray/v1"
	"github.com/goray/goray/task"
)

// lenOf reads a stored []byte on whatever node it runs.
var lenOf = task.Register1("clustertest.len_of", func(ctx context.Context, b []byte) (int, error) { return len(b), nil })

// storeUsed is the bytes in use in a node's object store.
func storeUsed(t *testing.T, r *raylet.Raylet) uint64 {
	t.Helper()
	cc, err := rpc.Dial(r.Address(), cl.Token())
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	info, err := rpc.NewNodeClient(cc).GetNodeInfo(t.Context(), &pb.GetNodeInfoRequest{})
	if err != nil {
		t.Fatal(err)
	}
	return info.GetObjectStore().GetUsedBytes()
}

// TestDroppedObjectFreedOnEveryNode: a stored object read on two other
// nodes (each pulls a copy) is freed on all three once its ref is dropped.
func TestDroppedObjectFreedOnEveryNode(t *testing.T) {
	ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
	defer cancel()
	nodes := append([]*raylet.Raylet{cl.Head().Node()}, cl.Nodes()...)
	settled := func() bool {
		runtime.GC()
		for _, n := range nodes {
			if storeUsed(t, n) != 0 {
				return false
			}
		}
		return true
	}
	testwait.Eventually(t, 30*time.Second, "every node's store empty before the test", settled)
	func() {
		ref, err := objectstore.Put(ctx, make([]byte, 4<<20))
		if err != nil {
			t.Fatal(err)
		}
		for _, res := range []string{"node_a", "node_b"} {
			n, err := lenOf.Remote(ctx, ref, task.WithResources(map[string]float64{"CPU": 1, res: 1})).Get(ctx)
			if err != nil || n != 4<<20 {
				t.Fatalf("read on %s: got %d, %v", res, n, err)
			}
		}
		for i, n := range nodes {
			if used := storeUsed(t, n); used < 4<<20 {
				t.Fatalf("node %d holds %d bytes in its store while the ref lives, want its copy (4 MiB)", i, used)
			}
		}
		runtime.KeepAlive(ref)
	}()
	testwait.Eventually(t, 30*time.Second, "the dropped object freed on every node", settled)
}
