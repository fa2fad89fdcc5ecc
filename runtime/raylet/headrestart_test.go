package raylet

import (
	"bytes"
	"context"
	"net"
	"path/filepath"
	"testing"
	"time"

	pb "github.com/goray/goray/proto/goray/v1"
)

// startHeadOnly starts a head with no node on listen, keeping its tables
// and token in dataDir.
func startHeadOnly(t *testing.T, listen, dataDir, tokenFile string, nodeTimeout time.Duration) *Raylet {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	r, err := Start(ctx, Config{
		Head: true, NoNode: true, Listen: listen, DataDir: dataDir, TokenFile: tokenFile,
		HeartbeatInterval: 50 * time.Millisecond, NodeTimeout: nodeTimeout,
		Logger: testLogger(t), Stderr: t.Output(),
	})
	if err != nil {
		t.Fatalf("Start head-only: %v", err)
	}
	t.Cleanup(r.Stop)
	return r
}

// nodeAlive reports whether the head at r lists id as alive.
func nodeAlive(t *testing.T, head *Raylet, id []byte) (listed, alive bool) {
	t.Helper()
	resp, err := pb.NewSchedulerServiceClient(dial(t, head.Address(), head.Token())).ListNodes(callCtx(t), &pb.ListNodesRequest{})
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

func eventually(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(d); !cond(); time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("got no %s within %s", what, d)
		}
	}
}

func TestHeadOnlyRestart(t *testing.T) {
	dir := t.TempDir()
	dataDir, tokenFile := filepath.Join(dir, "head"), filepath.Join(dir, "token")
	head := startHeadOnly(t, "127.0.0.1:0", dataDir, tokenFile, 2*time.Second)
	addr, token := head.Address(), head.Token()

	// The head-only process serves no node.
	if _, err := nodeClient(t, head).GetNodeInfo(callCtx(t), &pb.GetNodeInfoRequest{}); err == nil {
		t.Fatal("GetNodeInfo on a head-only process: got nil error, want Unimplemented")
	}
	node := startNode(t, head, map[string]float64{"CPU": 1})
	id := node.NodeID()
	if listed, _ := nodeAlive(t, head, id[:]); !listed {
		t.Fatalf("node %s: not listed by the head", id)
	}
	if resp, _ := pb.NewSchedulerServiceClient(dial(t, addr, token)).ListNodes(callCtx(t), &pb.ListNodesRequest{}); len(resp.GetNodes()) != 1 {
		t.Fatalf("nodes: got %v, want only the joined node", resp.GetNodes())
	}

	head.Stop()
	time.Sleep(300 * time.Millisecond) // the raylet's heartbeats fail meanwhile
	head = startHeadOnly(t, addr, dataDir, tokenFile, 2*time.Second)
	if head.Token() != token {
		t.Fatalf("token after restart: got %q, want the first head's %q", head.Token(), token)
	}
	// The node is listed alive from the store and keeps heartbeating the new
	// head past its node timeout.
	time.Sleep(3 * time.Second)
	if _, alive := nodeAlive(t, head, id[:]); !alive {
		t.Fatalf("node %s after the head restart and a node timeout: got dead, want alive", id)
	}
	select {
	case <-node.Retired():
		t.Fatal("node retired after a head restart, want it kept")
	default:
	}
}

func TestDeadNodeRejoinsAsNewIncarnation(t *testing.T) {
	dir := t.TempDir()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	listen := lis.Addr().String()
	lis.Close()
	head := startHeadOnly(t, listen, filepath.Join(dir, "head"), filepath.Join(dir, "token"), 300*time.Millisecond)

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
	// heartbeat loop blocks on mu while the test holds it.
	node.mu.Lock()
	time.Sleep(time.Second) // the loop blocks on mu in heartbeatRequest
	node.mu.Unlock()
	eventually(t, 5*time.Second, "retirement of the node declared dead", func() bool {
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
