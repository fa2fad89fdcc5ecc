package raylet

import (
	"context"
	"net"
	"path/filepath"
	"testing"
	"time"

	"google.golang.org/grpc"

	"github.com/goray/goray/internal/rpc"
	"github.com/goray/goray/scheduler"
)

// headOpts configure startTestHead's head.
type headOpts struct {
	heartbeat, nodeTimeout time.Duration
}

// startTestHead starts a head (package scheduler) and its own node on one
// server and port, as internal/embed does for `raylet --head` (this package
// cannot import embed), and stops both when the test ends. It returns the
// node; its Address is the head's too. cfg.TokenFile, when set, receives the
// cluster token for joining nodes.
func startTestHead(t testing.TB, cfg Config, o headOpts) *Raylet {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	token, err := rpc.GenerateToken()
	if err != nil {
		t.Fatal(err)
	}
	if cfg.TokenFile != "" {
		if err := rpc.WriteTokenFile(cfg.TokenFile, token); err != nil {
			t.Fatal(err)
		}
	}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := lis.Addr().String()
	sched, err := scheduler.New(scheduler.Config{DataDir: filepath.Join(t.TempDir(), "head"), Token: token,
		HeartbeatInterval: o.heartbeat, NodeTimeout: o.nodeTimeout, Logger: cfg.Logger})
	if err != nil {
		lis.Close()
		t.Fatalf("start head: %v", err)
	}
	srv := grpc.NewServer(ServerOptions(token)...)
	sched.Register(srv)
	cfg.Address, cfg.HeadNode, cfg.Token = addr, true, token
	node, err := New(cfg, lis.Addr())
	if err != nil {
		sched.Close()
		lis.Close()
		t.Fatalf("start head's node: %v", err)
	}
	node.Register(srv)
	served := make(chan struct{})
	go func() { defer close(served); _ = srv.Serve(lis) }()
	t.Cleanup(func() {
		node.StopWorkers()
		sched.Close()
		rpc.StopServer(srv, gracefulTimeout)
		<-served
		node.Stop()
	})
	if err := node.Join(ctx); err != nil {
		t.Fatalf("start head's node: %v", err)
	}
	return node
}
