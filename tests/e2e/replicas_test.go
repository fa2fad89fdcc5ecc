package e2e

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/goray/goray/internal/core"
	"github.com/goray/goray/internal/rpc"
	"github.com/goray/goray/internal/testcluster"
	"github.com/goray/goray/internal/testwait"
	"github.com/goray/goray/objectstore"
	pb "github.com/goray/goray/proto/goray/v1"
	"github.com/goray/goray/runtime"
	"github.com/goray/goray/task"
)

// digestOf says where it ran and the SHA-256 of the bytes it got.
var digestOf = task.Register1("e2e.replicas.digest", func(_ context.Context, b []byte) (string, error) {
	s := sha256.Sum256(b)
	return runtime.CurrentNodeID() + " " + hex.EncodeToString(s[:]), nil
})

// TestReplicatedObjects: a put with three replicas on three nodes has a
// copy on each; asking for more replicas than nodes stores one on each and
// says how many. The node the object was put on (the driver's) is
// SIGKILLed: a task on a node that joined later, with no copy, reads the
// object from another copy; the head learns of the death from that read
// (its node timeout is longer than the test), and the owner places a new
// copy, back to three, on the node that had none. With a second node
// killed the driver, whose own node is gone, still reads the object from a
// copy that is left.
func TestReplicatedObjects(t *testing.T) {
	c := newCluster(t)
	c.StartHeadOnly("127.0.0.1:0", "--node-timeout", noHeartbeatDeath)
	own := c.Join("own", `{"CPU":1}`)
	b := c.Join("b", `{"CPU":1}`)
	cnode := c.Join("c", `{"CPU":1}`)
	ctx := connect(t, c, own.Addr)
	cw, err := core.Current()
	if err != nil {
		t.Fatal(err)
	}

	data := make([]byte, 24<<20)
	rand.Read(data)
	sum := sha256.Sum256(data)
	want := hex.EncodeToString(sum[:])
	ref, err := objectstore.Put(ctx, data, objectstore.WithReplicas(3))
	if err != nil {
		t.Fatalf("put with 3 replicas: %v", err)
	}
	if n := ref.Replicas(); n != 3 {
		t.Fatalf("replicas of a put with 3 on 3 nodes: got %d, want 3", n)
	}
	small, err := objectstore.Put(ctx, "small", objectstore.WithReplicas(5))
	if err != nil {
		t.Fatalf("put with 5 replicas on 3 nodes: %v", err)
	}
	if n := small.Replicas(); n != 3 {
		t.Errorf("replicas of a put with 5 on 3 nodes: got %d, want 3 (one on each)", n)
	}
	if v, err := small.Get(ctx); err != nil || v != "small" {
		t.Errorf("get of the small replicated value: got %q, %v", v, err)
	}
	if _, err := objectstore.Put(ctx, 1, objectstore.WithReplicas(65)); !errors.Is(err, runtime.ErrInvalidArgument) || !strings.Contains(err.Error(), "65 replicas") {
		t.Errorf("put with 65 replicas: got %v, want ErrInvalidArgument naming the count", err)
	}
	plain, err := objectstore.Put(ctx, make([]byte, 1<<20))
	if err != nil || plain.Replicas() != 1 {
		t.Errorf("put without replicas: got %d replicas (%v), want 1", plain.Replicas(), err)
	}

	// Released, a replicated object goes from every node's store.
	dropped, err := objectstore.Put(ctx, make([]byte, 8<<20), objectstore.WithReplicas(3))
	if err != nil || dropped.Replicas() != 3 {
		t.Fatalf("put of the object to release: %d replicas, %v", dropped.Replicas(), err)
	}
	used := func(n *node) uint64 {
		cc, err := rpc.Dial(n.Addr, c.Token())
		if err != nil {
			t.Fatal(err)
		}
		defer cc.Close()
		info, err := rpc.NewNodeClient(cc).GetNodeInfo(ctx, &pb.GetNodeInfoRequest{})
		if err != nil {
			t.Fatal(err)
		}
		return info.GetObjectStore().GetUsedBytes()
	}
	nodes := []*node{own, b, cnode}
	before := make([]uint64, len(nodes))
	for i, n := range nodes {
		before[i] = used(n)
	}
	dropped.Release()
	testwait.Eventually(t, 30*time.Second, "the released object's copies freed on every node", func() bool {
		for i, n := range nodes {
			if used(n) > before[i]-8<<20 {
				return false
			}
		}
		return true
	})

	late := c.Join("late", `{"CPU":1}`)
	if err := testcluster.WaitAlive(ctx, late.NodeID); err != nil {
		t.Fatal(err)
	}
	killed := killNode(t, own)
	// The killed raylet's shared memory outlives it on one machine; remove
	// it, as the next raylet's sweep or another machine would.
	if err := os.RemoveAll(storeDir(t, own)); err != nil {
		t.Fatal(err)
	}
	got, err := digestOf.Remote(ctx, ref, task.WithStrategy(runtime.NodeAffinity(late.NodeID, false))).Get(ctx)
	if err != nil {
		t.Fatalf("read on a node with no copy after the put's node was killed: %v", err)
	}
	t.Logf("measured: the object was read on a node with no copy %s after its first copy's node was killed", time.Since(killed).Round(time.Millisecond))
	if got != late.NodeID+" "+want {
		t.Fatalf("read on the late node: got %q, want %q", got, late.NodeID+" "+want)
	}
	// Whether the late node's pull went past the dead copy depends on
	// whether the owner had dropped it from the location yet.
	t.Logf("the late node's pull failed over from the dead copy: %t", strings.Contains(late.Stderr.String(), "failing over to a replica"))

	testwait.Eventually(t, time.Minute, "a copy placed again after the node died, back to 3", func() bool {
		return cw.Stats().Rereplicated.Load() >= 1 && ref.Replicas() == 3
	})
	t.Logf("measured: back to 3 replicas %s after the kill", time.Since(killed).Round(time.Millisecond))

	killNode(t, b)
	if err := os.RemoveAll(storeDir(t, b)); err != nil {
		t.Fatal(err)
	}
	back, err := ref.Get(ctx)
	if err != nil {
		t.Fatalf("driver's read with its own node and another gone: %v", err)
	}
	if !bytes.Equal(back, data) {
		t.Fatal("driver's read: the bytes differ from those put")
	}
	if v, err := small.Get(ctx); err != nil || v != "small" {
		t.Errorf("get of the small replicated value after two nodes died: got %q, %v", v, err)
	}
}
