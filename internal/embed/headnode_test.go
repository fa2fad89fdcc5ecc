package embed

import (
	"testing"
	"time"

	"github.com/goray/goray/internal/ids"
	"github.com/goray/goray/internal/rpc"
	pb "github.com/goray/goray/proto/goray/v1"
)

// TestHeadNodeRejoinsAfterDeclaredDead: the head's own node, once the head
// holds it for dead (here a RegisterNode of another ID at its address,
// which makes the head declare the old one dead), joins again as a new
// node and is alive in the head's table; the head keeps serving.
func TestHeadNodeRejoinsAfterDeclaredDead(t *testing.T) {
	cfg := Config{Head: true, HeartbeatInterval: 50 * time.Millisecond, NodeTimeout: 2 * time.Second}
	cfg.Listen, cfg.Logger, cfg.Stderr = "127.0.0.1:0", testLogger(t), t.Output()
	s, err := Start(callCtx(t), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Close)
	old := s.Node().NodeID()
	cc, err := rpc.Dial(s.Address(), s.Token())
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	forged := ids.NewNodeID()
	if _, err := rpc.NewHeadClient(cc).RegisterNode(callCtx(t), &pb.RegisterNodeRequest{NodeId: forged[:], Address: s.Address(),
		Total: &pb.Resources{Amounts: map[string]float64{"CPU": 1}}}); err != nil {
		t.Fatalf("RegisterNode at the head node's address: %v", err)
	}
	deadline := time.Now().Add(20 * time.Second)
	for {
		n := s.Node().NodeID()
		if n != old {
			if _, alive := nodeAlive(t, s.Address(), s.Token(), n[:]); alive {
				break
			}
		}
		if time.Now().After(deadline) {
			_, oldAlive := nodeAlive(t, s.Address(), s.Token(), old[:])
			t.Fatalf("20s after the head declared its node %s dead (still alive: %t): got node %s, want a new incarnation alive", old, oldAlive, n)
		}
		time.Sleep(50 * time.Millisecond)
	}
	if _, alive := nodeAlive(t, s.Address(), s.Token(), old[:]); alive {
		t.Errorf("the old incarnation %s: got alive, want dead", old)
	}
}
