package testcluster

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/goray/goray/internal/embed"
	"github.com/goray/goray/internal/raylet"
	"github.com/goray/goray/runtime"
)

// Config configures an in-process cluster.
type Config struct {
	// HeadResources are the head node's resources; default raylet's
	// (the machine's CPUs).
	HeadResources map[string]float64
	// Nodes are the resources of the nodes that join at start, in order.
	Nodes []map[string]float64
	// HeartbeatInterval and NodeTimeout configure the head; defaults
	// embed.Config's.
	HeartbeatInterval, NodeTimeout time.Duration
	// Logger receives the servers' logs; default Logger().
	Logger *slog.Logger
}

// Logger is the servers' default logger: silent, unless GORAY_TEST_LOG is
// set, then info and above to stderr.
func Logger() *slog.Logger {
	if os.Getenv("GORAY_TEST_LOG") != "" {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelInfo}))
	}
	return slog.New(slog.NewTextHandler(io.Discard, nil))
}

// InProcess is a cluster inside the test process: a head with its node
// (embed.Start with Head) and raylets that join it (raylet.Start). Worker
// processes are started from the test binary.
type InProcess struct {
	cfg   Config
	head  *embed.Server
	mu    sync.Mutex
	nodes []*raylet.Raylet // the nodes that joined at start (AddNode's are stopped by their test)
	once  sync.Once
}

var _ Cluster = (*InProcess)(nil)

// StartInProcess starts a head and cfg.Nodes, and returns once every node
// is registered. It takes no *testing.T so that a TestMain can share one
// cluster between tests; Close stops it.
func StartInProcess(ctx context.Context, cfg Config) (_ *InProcess, err error) {
	if cfg.Logger == nil {
		cfg.Logger = Logger()
	}
	hc := embed.Config{Head: true, HeartbeatInterval: cfg.HeartbeatInterval, NodeTimeout: cfg.NodeTimeout}
	hc.Logger, hc.Resources = cfg.Logger, cfg.HeadResources
	c := &InProcess{cfg: cfg}
	if c.head, err = embed.Start(ctx, hc); err != nil {
		return nil, fmt.Errorf("start the head: %w", err)
	}
	defer func() {
		if err != nil {
			c.Close()
		}
	}()
	for i, res := range cfg.Nodes {
		n, err := c.join(ctx, res)
		if err != nil {
			return nil, fmt.Errorf("start node %d: %w", i, err)
		}
		c.mu.Lock()
		c.nodes = append(c.nodes, n)
		c.mu.Unlock()
	}
	return c, nil
}

func (c *InProcess) join(ctx context.Context, res map[string]float64) (*raylet.Raylet, error) {
	return raylet.Start(ctx, raylet.Config{Address: c.head.Address(), Token: c.head.Token(), Resources: res, Logger: c.cfg.Logger})
}

// Address is the head's address.
func (c *InProcess) Address() string { return c.head.Address() }

// Token is the cluster token.
func (c *InProcess) Token() string { return c.head.Token() }

// Head is the head's server; its Node is the head's node.
func (c *InProcess) Head() *embed.Server { return c.head }

// Nodes are the nodes that joined at start, in cfg.Nodes' order.
func (c *InProcess) Nodes() []*raylet.Raylet {
	c.mu.Lock()
	defer c.mu.Unlock()
	return slices.Clone(c.nodes)
}

// AddNode starts a raylet with resources, stopped when t ends, and waits
// until the head lists it alive (the driver must be connected). When t ends
// it also waits until the head lists the node dead, so that later tests
// counting alive nodes do not see it.
func (c *InProcess) AddNode(t testing.TB, resources map[string]float64) Node {
	t.Helper()
	r := c.Join(t, resources)
	return inNode{r}
}

// Join is AddNode returning the raylet itself.
func (c *InProcess) Join(t testing.TB, resources map[string]float64) *raylet.Raylet {
	t.Helper()
	r, err := c.join(t.Context(), resources)
	if err != nil {
		t.Fatalf("start raylet: %v", err)
	}
	id := r.NodeID().String()
	t.Cleanup(func() {
		r.Stop()
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		if err := WaitNodes(ctx, "the stopped node dead", func(m map[string]runtime.Node) bool { return !m[id].Alive }); err != nil {
			t.Errorf("node %s: %v", id, err)
		}
	})
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	defer cancel()
	if err := WaitAlive(ctx, id); err != nil {
		t.Fatal(err)
	}
	return r
}

// Close stops the joined nodes and the head. It is idempotent.
func (c *InProcess) Close() {
	c.once.Do(func() {
		c.mu.Lock()
		nodes := c.nodes
		c.mu.Unlock()
		for _, n := range nodes {
			n.Stop()
		}
		c.head.Close()
	})
}

// inNode is a node of an InProcess cluster.
type inNode struct{ r *raylet.Raylet }

func (n inNode) ID() string { return n.r.NodeID().String() }

// Kill stops the raylet and its workers; it does not tell the head, which
// declares the node dead when its heartbeats stop.
func (n inNode) Kill(testing.TB) { n.r.Stop() }
