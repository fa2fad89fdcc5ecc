package testcluster

// Test bodies shared by the tiers: each checks one rule through the public
// SDK against any Cluster, and runs under InProcess (tests/cluster) and
// Processes (tests/e2e).

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/goray/goray/actor"
	"github.com/goray/goray/internal/core"
	"github.com/goray/goray/internal/testwait"
	"github.com/goray/goray/objectstore"
	"github.com/goray/goray/runtime"
	"github.com/goray/goray/task"
)

// Namespace is where the bodies' named actors live.
const Namespace = "goray-testcluster"

// Gate is an actor that tasks report to: Arrive records where a task runs,
// and Hold holds tasks until the test calls Release. Spawn it with
// actor.WithMaxConcurrency more than the number of tasks it holds at once
// (SpawnGate does), so that Nodes and Release are served meanwhile.
type Gate struct {
	mu       sync.Mutex
	nodes    []string
	changed  chan struct{} // closed and replaced on every arrival
	released chan struct{} // closed by Release
}

func newGate() *Gate { return &Gate{changed: make(chan struct{}), released: make(chan struct{})} }

// Arrive records an arrival from node and returns how many arrived so far,
// this one included.
func (g *Gate) Arrive(_ context.Context, node string) (int, error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.nodes = append(g.nodes, node)
	close(g.changed)
	g.changed = make(chan struct{})
	return len(g.nodes), nil
}

// Nodes are the nodes of the arrivals so far, in order.
func (g *Gate) Nodes(context.Context) ([]string, error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	return slices.Clone(g.nodes), nil
}

// Hold records an arrival from node and returns once Release was called
// (or the call's context ends).
func (g *Gate) Hold(ctx context.Context, node string) (int, error) {
	mine, _ := g.Arrive(ctx, node)
	select {
	case <-g.released:
		return mine, nil
	case <-ctx.Done():
		return 0, ctx.Err()
	}
}

// Release lets every held task go, now and later.
func (g *Gate) Release(context.Context) (bool, error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	select {
	case <-g.released:
	default:
		close(g.released)
	}
	return true, nil
}

var (
	// GateType is the Gate actor.
	GateType = actor.Register("testcluster.gate", newGate)
	// GateNodes lists the nodes of the Gate's arrivals.
	GateNodes = actor.Method0(GateType, "nodes", (*Gate).Nodes)
	// GateRelease lets the Gate's held tasks go.
	GateRelease = actor.Method0(GateType, "release", (*Gate).Release)
	gateHold    = actor.Method1(GateType, "hold", (*Gate).Hold)
	gateOn      = actor.Method1(GateType, "arrive", (*Gate).Arrive)

	// HoldAtGate is a task that waits at the Gate named by its argument
	// until the test releases it, and says on which node it ran: tasks that
	// hold their workers (and leases) at once, for as long as the test needs.
	HoldAtGate = task.Register1("testcluster.hold_at_gate", func(ctx context.Context, gate string) (string, error) {
		g, err := actor.Get(ctx, GateType, gate, actor.WithNamespace(Namespace))
		if err != nil {
			return "", err
		}
		node := runtime.CurrentNodeID()
		if _, err := gateHold.Remote(ctx, g, objectstore.Val(node)).Get(ctx); err != nil {
			return "", err
		}
		return node, nil
	})

	// holdFirst reports to the Gate named gate; its first attempt then holds
	// its worker until it dies, a later attempt says where it ran.
	holdFirst = task.Register1("testcluster.hold_first", func(ctx context.Context, gate string) (string, error) {
		g, err := actor.Get(ctx, GateType, gate, actor.WithNamespace(Namespace))
		if err != nil {
			return "", err
		}
		node := runtime.CurrentNodeID()
		n, err := gateOn.Remote(ctx, g, objectstore.Val(node)).Get(ctx)
		if err != nil {
			return "", err
		}
		if n == 1 {
			<-ctx.Done() // the node is killed under it
			return "", ctx.Err()
		}
		return node, nil
	})

	// whereTask says on which node it ran.
	whereTask = task.Register0("testcluster.node_of", func(context.Context) (string, error) {
		return runtime.CurrentNodeID(), nil
	})

	// makeBlob returns a stored (past the inline limit) result derived from
	// seed, and where it was made.
	makeBlob = task.Register1("testcluster.make_blob", func(_ context.Context, seed string) (Blob, error) {
		return Blob{Node: runtime.CurrentNodeID(), Data: blobData(seed)}, nil
	})

	tallyType = actor.Register("testcluster.tally", func() *Tally { return &Tally{} })
	tallyAdd  = actor.Method1(tallyType, "add", (*Tally).Add)
	tallyNode = actor.Method0(tallyType, "node", (*Tally).Node)
)

// Blob is a stored result and the node that made it.
type Blob struct {
	Node string
	Data []byte
}

const blobSize = 1 << 20

func blobData(seed string) []byte {
	var b bytes.Buffer
	for i := 0; b.Len() < blobSize; i++ {
		s := sha256.Sum256([]byte(seed + string(rune(i))))
		b.Write(s[:])
	}
	return b.Bytes()[:blobSize]
}

// Tally is a restartable actor with state.
type Tally struct{ n int }

// Add adds d and returns the sum.
func (t *Tally) Add(_ context.Context, d int) (int, error) { t.n += d; return t.n, nil }

// Node is the node hosting the actor.
func (*Tally) Node(context.Context) (string, error) { return runtime.CurrentNodeID(), nil }

// SpawnGate spawns a Gate under a fresh name in Namespace, killed when t
// ends, that can hold up to holders tasks and still serve the test's calls.
func SpawnGate(t testing.TB, holders int, opts ...actor.Option) (actor.Handle[Gate], string) {
	t.Helper()
	var b [8]byte
	_, _ = rand.Read(b[:])
	name := "gate-" + hex.EncodeToString(b[:])
	opts = append([]actor.Option{actor.WithName(name), actor.WithNamespace(Namespace), actor.WithMaxConcurrency(holders + 2)}, opts...)
	h, err := actor.Spawn(t.Context(), GateType, opts...)
	if err != nil {
		t.Fatalf("spawn the gate: %v", err)
	}
	t.Cleanup(func() { _ = actor.Kill(context.Background(), h) })
	return h, name
}

// NodeDeath checks what happens when a node dies under running work (the
// design's fault-tolerance rule): the head declares it dead once its
// heartbeats stop; the task running there is retried on a live node; a
// stored result lost with it is rebuilt from lineage; an actor with restarts
// left starts again elsewhere with fresh state; hard affinity to the dead
// node is infeasible, saying it is dead, and soft affinity runs elsewhere.
// The driver must be connected to c, and c must have room for the work on
// its other nodes.
func NodeDeath(t *testing.T, c Cluster) {
	ctx, cancel := context.WithTimeout(t.Context(), 3*time.Minute)
	defer cancel()
	gate, gateName := SpawnGate(t, 1) // before the victim joins: not on it

	victim := c.AddNode(t, map[string]float64{"CPU": 2})
	id := victim.ID()
	onVictim := runtime.NodeAffinity(id, true)
	h, err := actor.Spawn(ctx, tallyType, actor.WithStrategy(onVictim), actor.WithMaxRestarts(2))
	if err != nil {
		t.Fatalf("spawn: %v", err)
	}
	t.Cleanup(func() { _ = actor.Kill(context.Background(), h) })
	if n, err := tallyNode.Remote(ctx, h).Get(ctx); err != nil || n != id {
		t.Fatalf("actor with soft affinity to the victim: got it on %q (%v), want the victim %s", n, err, id)
	}
	if n, err := tallyAdd.Remote(ctx, h, objectstore.Val(5)).Get(ctx); err != nil || n != 5 {
		t.Fatalf("add 5: got %d, %v; want 5", n, err)
	}
	blob := makeBlob.Remote(ctx, objectstore.Val(t.Name()), task.WithStrategy(onVictim))
	// Made (on the victim), not read here: its only copy dies with the node.
	if _, _, err := objectstore.Wait(ctx, []objectstore.Ref[Blob]{blob}, 1); err != nil {
		t.Fatal(err)
	}
	held := holdFirst.Remote(ctx, objectstore.Val(gateName), task.WithStrategy(onVictim))
	testwait.Eventually(t, 30*time.Second, "the held task running on the victim", func() bool {
		nodes, err := GateNodes.Remote(ctx, gate).Get(ctx)
		return err == nil && slices.Contains(nodes, id)
	})
	cw, err := core.Current()
	if err != nil {
		t.Fatal(err)
	}
	retries, rebuilt := cw.Stats().TaskRetries.Load(), cw.Stats().Reconstructed.Load()

	victim.Kill(t)
	testwait.Eventually(t, 30*time.Second, "the killed node listed dead", func() bool {
		nodes, err := runtime.Nodes(ctx)
		if err != nil {
			return false
		}
		n, ok := ByID(nodes)[id]
		return ok && !n.Alive
	})

	got, err := blob.Get(ctx)
	if err != nil {
		t.Fatalf("get the lost stored result: %v", err)
	}
	if got.Node == id || !bytes.Equal(got.Data, blobData(t.Name())) {
		t.Errorf("rebuilt result: made on %s (victim %s), data intact %t; want made elsewhere, intact", got.Node, id, bytes.Equal(got.Data, blobData(t.Name())))
	}
	if n, err := tallyAdd.Remote(ctx, h, objectstore.Val(1)).Get(ctx); err != nil || n != 1 {
		t.Errorf("add 1 after the node died: got %d, %v; want 1 (restarted, fresh state)", n, err)
	}
	if where, err := tallyNode.Remote(ctx, h).Get(ctx); err != nil || where == id {
		t.Errorf("restarted actor: got it on %q (%v), want another node than the victim", where, err)
	}
	if ran, err := held.Get(ctx); err != nil || ran == id {
		t.Errorf("task running on the killed node: got it ran on %q (%v), want retried on another node", ran, err)
	}
	if r := cw.Stats().TaskRetries.Load() - retries; r < 1 {
		t.Errorf("task retries after the node died: got %d, want at least 1", r)
	}
	if r := cw.Stats().Reconstructed.Load() - rebuilt; r < 1 {
		t.Errorf("objects rebuilt from lineage after the node died: got %d, want at least 1", r)
	}

	// Hard affinity to the dead node is infeasible, saying so. The head
	// knows at once; raylets learn the head's view in heartbeat replies (a
	// lease spilled to a node that just died fails with the transport's
	// error, not ErrInfeasible): poll until they do.
	hard := runtime.NodeAffinity(id, false)
	var spawnErr, taskErr error
	defer func() {
		if t.Failed() {
			t.Logf("last answers to hard affinity to the dead node: actor %v; task %v; want ErrInfeasible saying the node is dead", spawnErr, taskErr)
		}
	}()
	testwait.Eventually(t, 30*time.Second, "hard affinity to the dead node refused as infeasible", func() bool {
		var a actor.Handle[Tally]
		if a, spawnErr = actor.Spawn(ctx, tallyType, actor.WithStrategy(hard)); spawnErr == nil {
			_ = actor.Kill(ctx, a)
		}
		tctx, cancel := context.WithTimeout(ctx, 20*time.Second)
		defer cancel()
		_, taskErr = whereTask.Remote(tctx, task.WithStrategy(hard)).Get(tctx)
		return deadInfeasible(spawnErr) && deadInfeasible(taskErr)
	})
	// Soft affinity to the dead node runs elsewhere.
	if ran, err := whereTask.Remote(ctx, task.WithStrategy(onVictim)).Get(ctx); err != nil || ran == id {
		t.Errorf("task with soft affinity to the dead node: got it on %q (%v), want another node", ran, err)
	}
}

// deadInfeasible: err is ErrInfeasible saying the node is dead.
func deadInfeasible(err error) bool {
	return errors.Is(err, runtime.ErrInfeasible) && strings.Contains(err.Error(), "dead")
}
