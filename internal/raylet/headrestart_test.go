package raylet

import (
	"bytes"
	"context"
	"github.com/goray/goray/internal/rpc"
	"path/filepath"
	"testing"
	"time"

	"github.com/goray/goray/internal/testwait"
	pb "github.com/goray/goray/proto/goray/v1"
)

// nodeAlive reports whether the head at r lists id as alive.
func nodeAlive(t *testing.T, head *Raylet, id []byte) (listed, alive bool) {
	t.Helper()
	resp, err := rpc.NewHeadClient(dial(t, head.Address(), head.Token())).ListNodes(callCtx(t), &pb.ListNodesRequest{})
	if err != nil {
		return false, false
	}
	for _, n := range resp.GetNodes() {
		if bytes.Equal(n.GetNodeId(), id) {
			return true, n.GetAlive()
		}
	}
	return false, false
}

func TestDeadNodeRejoinsAsNewIncarnation(t *testing.T) {
	head := startTestHead(t, Config{TokenFile: filepath.Join(t.TempDir(), "token"), Logger: testLogger(t), Stderr: t.Output()},
		headOpts{heartbeat: 50 * time.Millisecond, nodeTimeout: 300 * time.Millisecond})

	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	cfg := Config{Address: head.Address(), TokenFile: head.TokenFile(), Resources: map[string]float64{"CPU": 1},
		Logger: testLogger(t), Stderr: t.Output()}
	node, err := Start(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer node.Stop()
	old := node.NodeID()

	// Make the node miss its deadline, as a SIGSTOPped raylet would: its
	// heartbeat loop blocks on the lease manager's lock (it reads the
	// node's resources) while the test holds it, until the head lists the
	// node dead.
	node.leases.mu.Lock()
	testwait.Eventually(t, 5*time.Second, "the head declaring the silent node dead", func() bool {
		listed, alive := nodeAlive(t, head, old[:])
		return listed && !alive
	})
	node.leases.mu.Unlock()
	testwait.Eventually(t, 5*time.Second, "retirement of the node declared dead", func() bool {
		select {
		case <-node.Retired():
			return true
		default:
			return false
		}
	})
	if _, alive := nodeAlive(t, head, old[:]); alive {
		t.Fatalf("old incarnation %s: got alive, want dead", old)
	}
}
