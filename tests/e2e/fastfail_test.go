package e2e

// Fast failure when a peer is gone: the raylet of a node is SIGKILLed (its
// workers die with it) and the callers that find it gone tell the head,
// which probes the raylet and declares the node dead at once. Every test
// here runs its head with a node timeout far longer than the test, so a
// node can only be declared dead that way: reaching the outcome at all
// shows the fast path was taken. The delays are measured and logged, not
// asserted.

import (
	"bytes"
	"context"
	"errors"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/goray/goray/actor"
	"github.com/goray/goray/internal/core"
	"github.com/goray/goray/internal/testcluster"
	"github.com/goray/goray/internal/testwait"
	"github.com/goray/goray/objectstore"
	"github.com/goray/goray/runtime"
	"github.com/goray/goray/task"
)

// noHeartbeatDeath is the head's node timeout in these tests: longer than
// any test runs, so that no node dies of missed heartbeats.
const noHeartbeatDeath = "30m"

// Counter is an actor with state that says where it runs.
type Counter struct{ n int }

// Add adds d and returns the sum.
func (c *Counter) Add(_ context.Context, d int) (int, error) { c.n += d; return c.n, nil }

// Node is the node hosting the actor.
func (*Counter) Node(context.Context) (string, error) { return runtime.CurrentNodeID(), nil }

var (
	counterType = actor.Register("e2e.fastfail.counter", func() *Counter { return &Counter{} })
	counterAdd  = actor.Method1(counterType, "add", (*Counter).Add)
	counterNode = actor.Method0(counterType, "node", (*Counter).Node)

	// nodeOfTask says on which node it ran.
	nodeOfTask = task.Register0("e2e.fastfail.node_of", func(context.Context) (string, error) {
		return runtime.CurrentNodeID(), nil
	})

	// bigResult returns a stored (past the inline limit) result derived from
	// seed, with the node that made it.
	bigResult = task.Register1("e2e.fastfail.big", func(_ context.Context, seed string) (bigBlob, error) {
		return bigBlob{Node: runtime.CurrentNodeID(), Data: seededBytes(seed)}, nil
	})
)

// bigBlob is a stored result and the node that made it.
type bigBlob struct {
	Node string
	Data []byte
}

func seededBytes(seed string) []byte {
	b := bytes.Repeat([]byte(seed+"."), (512<<10)/(len(seed)+1)+1)
	return b[:512<<10]
}

// connect makes this test process a driver of c through the raylet at addr.
func connect(t *testing.T, c *cluster, addr string) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 3*time.Minute)
	t.Cleanup(cancel)
	if err := runtime.Init(ctx, runtime.WithAddress(addr), runtime.WithToken(c.Token()), runtime.WithLogger(testcluster.Logger())); err != nil {
		t.Fatalf("connect to the cluster: %v", err)
	}
	// Registered after the processes: runs before they are stopped.
	t.Cleanup(runtime.Shutdown)
	return ctx
}

// killNode SIGKILLs a node's raylet and waits until its worker processes,
// which die with it, are gone, so that whatever the test does next happens
// after the node died. It returns when that was.
func killNode(t *testing.T, n *node) time.Time {
	t.Helper()
	n.Kill(t)
	testwait.Eventually(t, workerGone, "the workers of the killed node gone", func() bool {
		return len(testcluster.ScanProcs(func(pid int, _ []string) bool {
			env := testcluster.ReadEnviron(pid)
			return env["GORAY_WORKER"] == "1" && env["GORAY_NODE_ID"] == n.NodeID
		})) == 0
	})
	return time.Now()
}

// storeDir is the object store directory of the raylet n, as its ready log
// line gives it.
func storeDir(t *testing.T, n *node) string {
	t.Helper()
	for _, l := range strings.Split(n.Stderr.String(), "\n") {
		if !strings.Contains(l, `msg="raylet ready"`) {
			continue
		}
		for _, f := range strings.Fields(l) {
			if dir, ok := strings.CutPrefix(f, "store_dir="); ok && dir != "" {
				return dir
			}
		}
	}
	t.Fatalf("raylet %s: no store_dir in its ready log line:\n%s", n.Name(), n.Stderr.String())
	return ""
}

// afterKill makes a call (again, at most once more) when its first attempt
// failed with ErrWorkerCrashed: a call that raced with the kill, sent on a
// stream the driver had not yet seen break, counts as in flight
// (at-most-once). The second attempt is certainly made after the driver
// saw the worker go.
func afterKill[T any](t *testing.T, call func() (T, error)) (T, error) {
	t.Helper()
	v, err := call()
	if errors.Is(err, runtime.ErrWorkerCrashed) {
		t.Logf("the first call after the kill raced with it (%v); calling again", err)
		v, err = call()
	}
	return v, err
}

// TestActorOnKilledNodeFailsFast: an actor whose node's raylet and workers
// were SIGKILLed. A call made after the kill to an actor without restarts
// fails with ErrActorDied, whose cause says the head found the node's
// raylet refusing connections; an actor with a restart left answers the
// call from its next incarnation on another node, with fresh state.
func TestActorOnKilledNodeFailsFast(t *testing.T) {
	c := newCluster(t)
	c.StartHead(`{"CPU":2}`, "--node-timeout", noHeartbeatDeath)
	victim := c.Join("victim", `{"CPU":2}`)
	ctx := connect(t, c, c.Address())

	onVictim := actor.WithStrategy(runtime.NodeAffinity(victim.NodeID, false))
	mortal, err := actor.Spawn(ctx, counterType, onVictim)
	if err != nil {
		t.Fatalf("spawn the actor without restarts: %v", err)
	}
	t.Cleanup(func() { _ = actor.Kill(context.Background(), mortal) })
	phoenix, err := actor.Spawn(ctx, counterType, actor.WithStrategy(runtime.NodeAffinity(victim.NodeID, true)), actor.WithMaxRestarts(1))
	if err != nil {
		t.Fatalf("spawn the actor with a restart: %v", err)
	}
	t.Cleanup(func() { _ = actor.Kill(context.Background(), phoenix) })
	for name, h := range map[string]actor.Handle[Counter]{"mortal": mortal, "phoenix": phoenix} {
		if n, err := counterAdd.Remote(ctx, h, objectstore.Val(5)).Get(ctx); err != nil || n != 5 {
			t.Fatalf("%s: add 5: got %d, %v; want 5", name, n, err)
		}
		if where, err := counterNode.Remote(ctx, h).Get(ctx); err != nil || where != victim.NodeID {
			t.Fatalf("%s: got it on %q (%v), want the victim %s", name, where, err, victim.NodeID)
		}
	}

	killed := killNode(t, victim)
	_, err = afterKill(t, func() (int, error) { return counterAdd.Remote(ctx, mortal, objectstore.Val(1)).Get(ctx) })
	diedAfter := time.Since(killed)
	if !errors.Is(err, runtime.ErrActorDied) || !strings.Contains(err.Error(), "refused a connection") {
		t.Fatalf("call to the actor without restarts after its node was killed: got %v, want ErrActorDied caused by the node's raylet refusing the head's probe", err)
	}
	t.Logf("measured: ErrActorDied %s after the kill: %v", diedAfter.Round(time.Millisecond), err)

	restartStart := time.Now()
	n, err := afterKill(t, func() (int, error) { return counterAdd.Remote(ctx, phoenix, objectstore.Val(1)).Get(ctx) })
	if err != nil || n != 1 {
		t.Fatalf("call to the actor with a restart after its node was killed: got %d, %v; want 1 (restarted, fresh state)", n, err)
	}
	t.Logf("measured: the restarted actor answered %s after the kill (%s after the call)", time.Since(killed).Round(time.Millisecond), time.Since(restartStart).Round(time.Millisecond))
	if where, err := counterNode.Remote(ctx, phoenix).Get(ctx); err != nil || where == victim.NodeID {
		t.Errorf("restarted actor: got it on %q (%v), want another node than the victim", where, err)
	}
	nodes, err := runtime.Nodes(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if testcluster.ByID(nodes)[victim.NodeID].Alive {
		t.Errorf("head's node table: got the killed node alive, want it dead")
	}
}

// TestLostObjectRebuiltFast: a task's stored result whose only copy died
// with its node (SIGKILL of the raylet). A Get reads it: the local
// raylet's pull finds the holder's raylet refusing connections, the head
// declares the node dead at once, and the owner runs the task again on a
// live node (its soft affinity to the dead node falls back) — the rebuild
// starts without waiting for the node's heartbeat deadline.
func TestLostObjectRebuiltFast(t *testing.T) {
	c := newCluster(t)
	c.StartHead(`{"CPU":2}`, "--node-timeout", noHeartbeatDeath)
	victim := c.Join("victim", `{"CPU":2}`)
	ctx := connect(t, c, c.Address())
	cw, err := core.Current()
	if err != nil {
		t.Fatal(err)
	}

	ref := bigResult.Remote(ctx, objectstore.Val(t.Name()), task.WithStrategy(runtime.NodeAffinity(victim.NodeID, true)))
	// Made (on the victim) and not read here: its only copy dies with it.
	if _, _, err := objectstore.Wait(ctx, []objectstore.Ref[bigBlob]{ref}, 1); err != nil {
		t.Fatal(err)
	}
	rebuilt := cw.Stats().Reconstructed.Load()
	killed := killNode(t, victim)
	got, err := ref.Get(ctx)
	if err != nil {
		t.Fatalf("get the lost stored result: %v", err)
	}
	t.Logf("measured: the lost object was rebuilt and read %s after the kill", time.Since(killed).Round(time.Millisecond))
	if got.Node == victim.NodeID || !bytes.Equal(got.Data, seededBytes(t.Name())) {
		t.Errorf("rebuilt result: made on %s (victim %s), data intact %t; want made elsewhere, intact", got.Node, victim.NodeID, bytes.Equal(got.Data, seededBytes(t.Name())))
	}
	if r := cw.Stats().Reconstructed.Load() - rebuilt; r != 1 {
		t.Errorf("objects rebuilt from lineage: got %d, want 1", r)
	}
}

// TestDriverRayletKilled: the driver's own raylet is SIGKILLed while
// another lives. New tasks run on the surviving raylet, and their stored
// results are read from it; a stored result that lived on the driver's
// node is rebuilt there from lineage; a large Put fails with ErrNodeDied
// saying this process's node (and its object store) is gone, a small one
// still works. Once no raylet is left, a task fails at once with
// ErrNodeDied.
func TestDriverRayletKilled(t *testing.T) {
	c := newCluster(t)
	c.StartHeadOnly("127.0.0.1:0", "--node-timeout", noHeartbeatDeath)
	own := c.Join("own", `{"CPU":2}`)
	other := c.Join("other", `{"CPU":2}`)
	ctx := connect(t, c, own.Addr)
	cw, err := core.Current()
	if err != nil {
		t.Fatal(err)
	}
	if where, err := nodeOfTask.Remote(ctx).Get(ctx); err != nil || (where != own.NodeID && where != other.NodeID) {
		t.Fatalf("task before the kill: got it on %q (%v), want one of the two nodes", where, err)
	}
	onOwn := bigResult.Remote(ctx, objectstore.Val("own"), task.WithStrategy(runtime.NodeAffinity(own.NodeID, true)))
	if _, _, err := objectstore.Wait(ctx, []objectstore.Ref[bigBlob]{onOwn}, 1); err != nil {
		t.Fatal(err)
	}
	rebuilt := cw.Stats().Reconstructed.Load()

	killed := killNode(t, own)
	// On one machine a killed raylet's shared memory outlives it until
	// the next raylet that starts sweeps it: remove it, as that sweep (or
	// the driver being on another machine) would, so that the stored
	// result that lived there is gone.
	if err := os.RemoveAll(storeDir(t, own)); err != nil {
		t.Fatal(err)
	}
	var ran []string
	for i := range 4 {
		start := time.Now()
		where, err := nodeOfTask.Remote(ctx).Get(ctx)
		if err != nil {
			t.Fatalf("task %d after the driver's raylet was killed: %v", i, err)
		}
		if i == 0 {
			t.Logf("measured: the first task after the kill ran %s after it (%s after its submission)", time.Since(killed).Round(time.Millisecond), time.Since(start).Round(time.Millisecond))
		}
		ran = append(ran, where)
	}
	if slices.ContainsFunc(ran, func(n string) bool { return n != other.NodeID }) {
		t.Errorf("tasks after the kill ran on %v, want all on the surviving node %s", ran, other.NodeID)
	}

	fresh, err := bigResult.Remote(ctx, objectstore.Val("fresh")).Get(ctx)
	if err != nil || fresh.Node != other.NodeID || !bytes.Equal(fresh.Data, seededBytes("fresh")) {
		t.Errorf("stored result of a task after the kill: got it from %q, intact %t (%v); want it from %s, intact", fresh.Node, bytes.Equal(fresh.Data, seededBytes("fresh")), err, other.NodeID)
	}
	got, err := onOwn.Get(ctx)
	if err != nil || got.Node != other.NodeID || !bytes.Equal(got.Data, seededBytes("own")) {
		t.Errorf("stored result lost with the driver's node: got it from %q, intact %t (%v); want it rebuilt on %s, intact", got.Node, bytes.Equal(got.Data, seededBytes("own")), err, other.NodeID)
	}
	if r := cw.Stats().Reconstructed.Load() - rebuilt; r != 1 {
		t.Errorf("objects rebuilt from lineage: got %d, want 1", r)
	}

	if _, err := objectstore.Put(ctx, make([]byte, 1<<20)); !errors.Is(err, runtime.ErrNodeDied) || !strings.Contains(err.Error(), "this process's node") {
		t.Errorf("1 MiB put after the driver's raylet was killed: got %v, want ErrNodeDied naming this process's node", err)
	} else {
		t.Logf("large put: %v", err)
	}
	small, err := objectstore.Put(ctx, "still here")
	if err != nil {
		t.Fatalf("small put: %v", err)
	}
	if v, err := small.Get(ctx); err != nil || v != "still here" {
		t.Errorf("small get: got %q, %v; want %q", v, err, "still here")
	}

	killNode(t, other)
	start := time.Now()
	where, err := nodeOfTask.Remote(ctx).Get(ctx)
	if !errors.Is(err, runtime.ErrNodeDied) {
		t.Fatalf("task with no raylet left: got %q, %v; want ErrNodeDied", where, err)
	}
	t.Logf("measured: with no raylet left the task failed %s after its submission: %v", time.Since(start).Round(time.Millisecond), err)
}
