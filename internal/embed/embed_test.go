package embed

import (
	"bytes"
	"context"
	"log/slog"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/goray/goray/internal/core"
	"github.com/goray/goray/internal/raylet"
	"github.com/goray/goray/internal/rpc"
	pb "github.com/goray/goray/proto/goray/v1"
)

func testLogger(t *testing.T) *slog.Logger {
	return slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelWarn}))
}

func callCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// startHeadOnly starts a head with no node on listen, keeping its tables
// and token in dataDir.
func startHeadOnly(t *testing.T, listen, dataDir, tokenFile string, nodeTimeout time.Duration) *Server {
	t.Helper()
	cfg := Config{Head: true, NoNode: true, HeartbeatInterval: 50 * time.Millisecond, NodeTimeout: nodeTimeout}
	cfg.Listen, cfg.DataDir, cfg.TokenFile, cfg.Logger, cfg.Stderr = listen, dataDir, tokenFile, testLogger(t), t.Output()
	s, err := Start(callCtx(t), cfg)
	if err != nil {
		t.Fatalf("Start head-only: %v", err)
	}
	t.Cleanup(s.Close)
	return s
}

// nodeAlive reports whether the head at addr lists id as alive.
func nodeAlive(t *testing.T, addr, token string, id []byte) (listed, alive bool) {
	t.Helper()
	cc, err := rpc.Dial(addr, token)
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	resp, err := rpc.NewHeadClient(cc).ListNodes(callCtx(t), &pb.ListNodesRequest{})
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

func TestHeadOnlyRestart(t *testing.T) {
	dir := t.TempDir()
	dataDir, tokenFile := filepath.Join(dir, "head"), filepath.Join(dir, "token")
	head := startHeadOnly(t, "127.0.0.1:0", dataDir, tokenFile, 2*time.Second)
	addr, token := head.Address(), head.Token()

	// The head-only process serves no node.
	cc, err := rpc.Dial(addr, token)
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	if _, err := rpc.NewNodeClient(cc).GetNodeInfo(callCtx(t), &pb.GetNodeInfoRequest{}); err == nil {
		t.Fatal("GetNodeInfo on a head-only process: got nil error, want Unimplemented")
	}
	node, err := raylet.Start(callCtx(t), raylet.Config{Address: addr, TokenFile: tokenFile,
		Resources: map[string]float64{"CPU": 1}, Logger: testLogger(t), Stderr: t.Output()})
	if err != nil {
		t.Fatalf("Start node: %v", err)
	}
	t.Cleanup(node.Stop)
	id := node.NodeID()
	if listed, _ := nodeAlive(t, addr, token, id[:]); !listed {
		t.Fatalf("node %s: not listed by the head", id)
	}
	if resp, _ := rpc.NewHeadClient(cc).ListNodes(callCtx(t), &pb.ListNodesRequest{}); len(resp.GetNodes()) != 1 {
		t.Fatalf("nodes: got %v, want only the joined node", resp.GetNodes())
	}

	head.Close()
	time.Sleep(300 * time.Millisecond) // the head stays down a while: the raylet's heartbeats fail meanwhile
	head = startHeadOnly(t, addr, dataDir, tokenFile, 2*time.Second)
	if head.Token() != token {
		t.Fatalf("token after restart: got %q, want the first head's %q", head.Token(), token)
	}
	// The node is listed alive from the store and keeps heartbeating the new
	// head past its node timeout (a duration that must pass, not a wait for
	// a condition).
	time.Sleep(3 * time.Second)
	if _, alive := nodeAlive(t, addr, token, id[:]); !alive {
		t.Fatalf("node %s after the head restart and a node timeout: got dead, want alive", id)
	}
	select {
	case <-node.Retired():
		t.Fatal("node retired after a head restart, want it kept")
	default:
	}
}

func TestHeadAndItsNodeShareAPort(t *testing.T) {
	cfg := Config{Head: true}
	cfg.Resources, cfg.Logger, cfg.Stderr = map[string]float64{"CPU": 1}, testLogger(t), t.Output()
	s, err := Start(callCtx(t), cfg)
	if err != nil {
		t.Fatal(err)
	}
	tokenFile := s.TokenFile()
	cc, err := rpc.Dial(s.Address(), s.Token())
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	info, err := rpc.NewNodeClient(cc).GetNodeInfo(callCtx(t), &pb.GetNodeInfoRequest{})
	if err != nil {
		t.Fatalf("GetNodeInfo: %v", err)
	}
	if info.GetHeadAddress() != s.Address() {
		t.Errorf("node's head address: got %q, want %q", info.GetHeadAddress(), s.Address())
	}
	if _, err := pb.NewClientServiceClient(cc).Handshake(callCtx(t), &pb.HandshakeRequest{ProtocolVersion: 1}); err != nil {
		t.Errorf("ClientService.Handshake on the head's port: %v", err)
	}
	s.Close()
	s.Close()
	if _, err := rpc.ReadTokenFile(tokenFile); err == nil {
		t.Errorf("default token file %s still there after Close", tokenFile)
	}
}

func TestConfigValidate(t *testing.T) {
	head := func(f func(*Config)) Config { c := Config{Head: true}; f(&c); return c }
	for _, tc := range []struct {
		name string
		cfg  Config
		want string // substring of the error; "" = valid
	}{
		{"head", Config{Head: true}, ""},
		{"join", Config{Config: raylet.Config{Address: "127.0.0.1:6379"}}, ""},
		{"neither", Config{}, "--head or --address"},
		{"both", Config{Head: true, Config: raylet.Config{Address: "127.0.0.1:1"}}, "exclusive"},
		{"no-node without head", Config{NoNode: true, Config: raylet.Config{Address: "127.0.0.1:1"}}, "needs --head"},
		{"negative timeout", Config{Head: true, NodeTimeout: -time.Second}, "negative"},
		{"bad listen", head(func(c *Config) { c.Listen = "x" }), "HOST:PORT"},
		{"public without auth", head(func(c *Config) { c.NoAuth, c.Listen = true, "0.0.0.0:0" }), "non-loopback"},
		{"public with auth", head(func(c *Config) { c.Listen = "0.0.0.0:0" }), ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.cfg.Validate()
			switch {
			case tc.want == "" && err != nil:
				t.Errorf("Validate: got %v, want nil", err)
			case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
				t.Errorf("Validate: got %v, want an error containing %q", err, tc.want)
			}
		})
	}
}

// TestDriverAtHeadOnlyAddress checks that a driver pointed at a head with no
// node is told it reached a head without a node and to use a raylet's
// address, naming one when a raylet has joined.
func TestDriverAtHeadOnlyAddress(t *testing.T) {
	dir := t.TempDir()
	head := startHeadOnly(t, "127.0.0.1:0", filepath.Join(dir, "data"), filepath.Join(dir, "token"), time.Minute)
	initErr := func() error {
		c, err := core.InitDriver(callCtx(t), core.Options{Address: head.Address(), Token: head.Token(), Logger: testLogger(t)})
		if err == nil {
			c.Close()
			t.Fatalf("InitDriver at the head-only address %s: got no error, want one", head.Address())
		}
		return err
	}
	err := initErr()
	for _, want := range []string{"head with no node", "GORAY_ADDRESS", "raylet --address " + head.Address()} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("InitDriver at a head with no node: got %q, want it to say %q", err, want)
		}
	}

	nc := Config{}
	nc.Address, nc.Token, nc.Logger, nc.Stderr = head.Address(), head.Token(), testLogger(t), t.Output()
	node, err := Start(callCtx(t), nc)
	if err != nil {
		t.Fatalf("Start node: %v", err)
	}
	t.Cleanup(node.Close)
	if err := initErr(); !strings.Contains(err.Error(), "head with no node") || !strings.Contains(err.Error(), node.Address()) {
		t.Errorf("InitDriver at a head with no node and a raylet: got %q, want it to name the raylet's address %s", err, node.Address())
	}
}
