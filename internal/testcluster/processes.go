package testcluster

import (
	"context"
	"encoding/json"
	"fmt"
	"path/filepath"
	"regexp"
	"sync"
	"testing"
	"time"

	"github.com/goray/goray/internal/rpc"
)

// RayletReadyLine is the ready line `raylet` prints for a node.
var RayletReadyLine = regexp.MustCompile(`^goray raylet ready: address=(\S+) node=([0-9a-f]+) head=(true|false) token_file=(\S*)$`)

// HeadReadyLine is the ready line of `raylet --head --no-node`.
var HeadReadyLine = regexp.MustCompile(`^goray head ready: address=(\S+) token_file=(\S*)$`)

// ProcNode is a running raylet process of a Processes cluster.
type ProcNode struct {
	*Proc
	// Addr is where the raylet (or head) serves.
	Addr string
	// NodeID is the node's ID in hex; "" for a head alone.
	NodeID string
	// IsHead: the process serves the head.
	IsHead bool
	// TokenFile is the token file its ready line names.
	TokenFile string
	// DataDir is the process's --data-dir.
	DataDir string
}

// ID is the node's ID.
func (n *ProcNode) ID() string { return n.NodeID }

var _ Node = (*ProcNode)(nil)

// Processes is a cluster of `raylet` processes on loopback sharing one token
// file, all under one test directory. Every process is stopped when the test
// that started the cluster ends, and then the test fails if any process that
// mentions the test directory (raylets, and workers started from a raylet's
// data dir) is left.
type Processes struct {
	t      testing.TB
	raylet string
	// Dir is the test's directory (data dirs, token file).
	Dir string
	// TokenFile is the cluster's token file.
	TokenFile string
	// Head is the head's process, once started.
	Head *ProcNode

	mu    sync.Mutex
	nodes []*ProcNode // head first
}

var _ Cluster = (*Processes)(nil)

// NewProcesses prepares a cluster of processes of the raylet binary at
// rayletBin in a fresh test directory (no process yet) and registers, before
// anything else starts, the check that no process of the test outlives it.
// extraLeakDirs are further paths whose processes count as the test's (the
// directory of the built binaries).
func NewProcesses(t testing.TB, rayletBin string, extraLeakDirs ...string) *Processes {
	t.Helper()
	dir := t.TempDir()
	t.Cleanup(func() { CheckNoLeaks(t, append([]string{dir}, extraLeakDirs...)...) })
	return &Processes{t: t, raylet: rayletBin, Dir: dir, TokenFile: filepath.Join(dir, "token")}
}

// StartProcesses starts a Processes cluster whose head (`raylet --head`) has
// headResources and extra head args (such as "--node-timeout", "3s").
func StartProcesses(t testing.TB, rayletBin string, headResources map[string]float64, headArgs ...string) *Processes {
	t.Helper()
	c := NewProcesses(t, rayletBin, filepath.Dir(rayletBin))
	c.StartHead(ResourcesJSON(t, headResources), headArgs...)
	return c
}

// ResourcesJSON is res as the --resources flag takes it.
func ResourcesJSON(t testing.TB, res map[string]float64) string {
	t.Helper()
	b, err := json.Marshal(res)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// StartRaylet starts a raylet with args and parses its ready line.
func (c *Processes) StartRaylet(name string, head bool, args ...string) *ProcNode {
	c.t.Helper()
	dataDir := filepath.Join(c.Dir, name)
	args = append(args, "--token-file", c.TokenFile, "--data-dir", dataDir, "--log-level", "info")
	p := StartProc(c.t, "raylet "+name, c.raylet, args, nil, false)
	line := p.WaitLine(c.t, ReadyTimeout, "ready line", RayletReadyLine.MatchString)
	m := RayletReadyLine.FindStringSubmatch(line)
	n := &ProcNode{Proc: p, Addr: m[1], NodeID: m[2], IsHead: m[3] == "true", TokenFile: m[4], DataDir: dataDir}
	if n.IsHead != head {
		c.t.Fatalf("raylet %s ready line %q: got head=%t, want head=%t", name, line, n.IsHead, head)
	}
	if n.TokenFile != c.TokenFile {
		c.t.Fatalf("raylet %s ready line %q: got token_file=%s, want %s", name, line, n.TokenFile, c.TokenFile)
	}
	c.mu.Lock()
	c.nodes = append(c.nodes, n)
	c.mu.Unlock()
	return n
}

// StartHead starts `raylet --head` on an ephemeral loopback port with the
// given resources JSON.
func (c *Processes) StartHead(resources string, args ...string) *ProcNode {
	c.t.Helper()
	c.Head = c.StartRaylet("head", true, append([]string{"--head", "--listen", "127.0.0.1:0", "--resources", resources}, args...)...)
	return c.Head
}

// StartHeadOnly starts `raylet --head --no-node` (the head as its own
// process, with no node) on listen ("127.0.0.1:0" the first time, the same
// address to restart it) with the cluster's token file and a data dir kept
// across restarts, and makes it the cluster's head. Its node has no ID.
func (c *Processes) StartHeadOnly(listen string, args ...string) *ProcNode {
	c.t.Helper()
	dataDir := filepath.Join(c.Dir, "head")
	args = append([]string{"--head", "--no-node", "--listen", listen, "--token-file", c.TokenFile, "--data-dir", dataDir, "--log-level", "info"}, args...)
	p := StartProc(c.t, "head", c.raylet, args, nil, false)
	line := p.WaitLine(c.t, ReadyTimeout, "head ready line", HeadReadyLine.MatchString)
	m := HeadReadyLine.FindStringSubmatch(line)
	if m[2] != c.TokenFile {
		c.t.Fatalf("head ready line %q: got token_file=%s, want %s", line, m[2], c.TokenFile)
	}
	c.Head = &ProcNode{Proc: p, Addr: m[1], IsHead: true, TokenFile: m[2], DataDir: dataDir}
	return c.Head
}

// Join starts a raylet that joins the head with the given resources JSON.
func (c *Processes) Join(name, resources string) *ProcNode {
	c.t.Helper()
	if c.Head == nil {
		c.t.Fatal("Join before StartHead")
	}
	return c.StartRaylet(name, false, "--address", c.Head.Addr, "--listen", "127.0.0.1:0", "--resources", resources)
}

// Nodes are the raylets started so far, the head first.
func (c *Processes) Nodes() []*ProcNode {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]*ProcNode(nil), c.nodes...)
}

// Address is the head's address.
func (c *Processes) Address() string { return c.Head.Addr }

// Token reads the cluster token from the token file.
func (c *Processes) Token() string {
	c.t.Helper()
	tok, err := rpc.ReadTokenFile(c.TokenFile)
	if err != nil {
		c.t.Fatalf("read the cluster token: %v", err)
	}
	return tok
}

// AddNode joins a raylet with resources and waits until the head lists it
// alive (the driver must be connected). Its process is stopped when the
// cluster's test ends; t is the test that needs it.
func (c *Processes) AddNode(t testing.TB, resources map[string]float64) Node {
	t.Helper()
	c.mu.Lock()
	name := fmt.Sprintf("node%d", len(c.nodes))
	c.mu.Unlock()
	n := c.Join(name, ResourcesJSON(t, resources))
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	defer cancel()
	if err := WaitAlive(ctx, n.NodeID); err != nil {
		t.Fatal(err)
	}
	return n
}

// Close stops every process, the joined nodes first. It is idempotent; the
// test's cleanup does it too.
func (c *Processes) Close() {
	nodes := c.Nodes()
	for i := len(nodes) - 1; i >= 0; i-- {
		nodes[i].Stop()
	}
	if c.Head != nil {
		c.Head.Stop()
	}
}
