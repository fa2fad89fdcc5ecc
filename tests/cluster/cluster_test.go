// Package cluster is the full-stack multi-raylet test tier: TestMain starts,
// inside the test process, a head raylet and two joined raylets with
// distinct custom resources, connects a driver to them, and the tests check
// scheduling through the public SDK only — strategies for actors and tasks,
// placement groups, infeasible and dead-node requests, the state API, named
// actors. Worker processes are started from the test binary, which serves
// as a worker when a raylet runs it (runtime.ServeIfWorker in TestMain).
//
// Set GORAY_TEST_LOG=1 to see the raylets' logs.
package cluster

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/goray/goray/actor"
	"github.com/goray/goray/internal/testcluster"
	"github.com/goray/goray/internal/testwait"
	"github.com/goray/goray/objectstore"
	"github.com/goray/goray/runtime"
	"github.com/goray/goray/task"
)

// Probe is an actor that says where it runs.
type Probe struct{}

// Node is the ID of the node hosting the actor.
func (*Probe) Node(context.Context) (string, error) { return runtime.CurrentNodeID(), nil }

var (
	probeType = actor.Register("clustertest.probe", func() *Probe { return &Probe{} })
	probeNode = actor.Method0(probeType, "node", (*Probe).Node)

	// nodeOf runs a task and says on which node it ran.
	nodeOf = task.Register0("clustertest.node_of", func(context.Context) (string, error) {
		return runtime.CurrentNodeID(), nil
	})
)

// The cluster's timing: short, so that a stopped raylet is declared dead
// within seconds.
const (
	heartbeat   = 200 * time.Millisecond
	nodeTimeout = 2 * time.Second
)

// cl is the cluster TestMain started.
var cl struct {
	*testcluster.InProcess
	// headID, aID, bID are the nodes' IDs as runtime.CurrentNodeID gives them.
	headID, aID, bID string
}

func TestMain(m *testing.M) {
	runtime.ServeIfWorker() // in a worker process: serve, never return
	code := testMain(m)
	if code == 0 {
		// After the cluster and the driver stopped: every goroutine they
		// started must be gone.
		if err := goleak.Find(); err != nil {
			fmt.Fprintln(os.Stderr, "cluster: goroutines left after the tests:", err)
			code = 1
		}
	}
	os.Exit(code)
}

func testMain(m *testing.M) int {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	c, err := testcluster.StartInProcess(ctx, testcluster.Config{
		HeadResources:     map[string]float64{"CPU": 2, "head_only": 10},
		Nodes:             []map[string]float64{{"CPU": 2, "node_a": 10}, {"CPU": 2, "node_b": 10}},
		HeartbeatInterval: heartbeat,
		NodeTimeout:       nodeTimeout,
	})
	if err != nil {
		fmt.Fprintln(os.Stderr, "cluster:", err)
		return 1
	}
	defer c.Close()
	cl.InProcess = c
	cl.headID, cl.aID, cl.bID = c.Head().Node().NodeID().String(), c.Nodes()[0].NodeID().String(), c.Nodes()[1].NodeID().String()
	if err := runtime.Init(ctx, runtime.WithAddress(c.Address()), runtime.WithToken(c.Token()),
		runtime.WithLogger(testcluster.Logger())); err != nil {
		fmt.Fprintln(os.Stderr, "cluster: init:", err)
		return 1
	}
	defer runtime.Shutdown()
	if err := testcluster.WaitAlive(ctx, cl.headID, cl.aID, cl.bID); err != nil {
		fmt.Fprintln(os.Stderr, "cluster:", err)
		return 1
	}
	return m.Run()
}

// waitNodes waits until cond holds for the head's node table.
func waitNodes(t *testing.T, what string, cond func(map[string]runtime.Node) bool) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	defer cancel()
	if err := testcluster.WaitNodes(ctx, what, cond); err != nil {
		t.Fatal(err)
	}
}

func aliveIDs(t *testing.T) []string {
	t.Helper()
	nodes, err := runtime.Nodes(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, n := range nodes {
		if n.Alive {
			out = append(out, n.ID)
		}
	}
	return out
}

// spawnProbe spawns a Probe, killed when the test ends, and says where it
// runs.
func spawnProbe(t *testing.T, opts ...actor.Option) (actor.Handle[Probe], string) {
	t.Helper()
	ctx := t.Context()
	h, err := actor.Spawn(ctx, probeType, opts...)
	if err != nil {
		t.Fatalf("spawn: %v", err)
	}
	t.Cleanup(func() { _ = actor.Kill(context.Background(), h) })
	node, err := probeNode.Remote(ctx, h).Get(ctx)
	if err != nil {
		t.Fatalf("probe: %v", err)
	}
	return h, node
}

func taskNode(t *testing.T, opts ...task.Option) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	node, err := nodeOf.Remote(ctx, opts...).Get(ctx)
	if err != nil {
		t.Fatalf("task: %v", err)
	}
	return node
}

func name(id string) string {
	switch id {
	case cl.headID:
		return "head"
	case cl.aID:
		return "a"
	case cl.bID:
		return "b"
	}
	return id[:8]
}

func TestSpreadUsesDistinctNodes(t *testing.T) {
	alive := aliveIDs(t)
	availableCPU(t)
	seen := map[string]bool{}
	for range len(alive) {
		_, node := spawnProbe(t, actor.WithStrategy(runtime.SpreadStrategy()))
		seen[node] = true
	}
	if len(seen) != len(alive) {
		t.Errorf("%d SPREAD actors on %d distinct nodes %v, want %d", len(alive), len(seen), slices.Collect(maps.Keys(seen)), len(alive))
	}
	// Tasks that hold their workers at once (they wait at a gate until
	// released) each need a lease of their own, and consecutive SPREAD
	// lease requests go round the nodes that fit, whatever ran before: one
	// task on each node.
	ctx := t.Context()
	gate, gateName := testcluster.SpawnGate(t, len(alive))
	refs := make([]objectstore.Ref[string], len(alive))
	for i := range refs {
		refs[i] = testcluster.HoldAtGate.Remote(ctx, objectstore.Val(gateName), task.WithStrategy(runtime.SpreadStrategy()))
	}
	var held []string
	testwait.Eventually(t, 30*time.Second, fmt.Sprintf("%d SPREAD tasks running at once", len(refs)), func() bool {
		held, _ = testcluster.GateNodes.Remote(ctx, gate).Get(ctx)
		return len(held) == len(refs)
	})
	// Before they go, the head's table shows their CPUs in use (a heartbeat
	// reported them): so the next test's wait for free CPUs is a wait for
	// their leases' return, never a stale table's answer.
	testwait.Eventually(t, 30*time.Second, "the held tasks' CPUs in use in the head's table", func() bool {
		nodes, err := runtime.Nodes(ctx)
		if err != nil {
			return false
		}
		m := testcluster.ByID(nodes)
		for _, id := range held {
			if m[id].Available["CPU"] >= m[id].Total["CPU"] {
				return false
			}
		}
		return true
	})
	if _, err := testcluster.GateRelease.Remote(ctx, gate).Get(ctx); err != nil {
		t.Fatal(err)
	}
	tasks := map[string]int{}
	for _, r := range refs {
		node, err := r.Get(ctx)
		if err != nil {
			t.Fatal(err)
		}
		tasks[node]++
	}
	if len(tasks) != len(alive) {
		t.Errorf("%d concurrent SPREAD tasks on %d distinct nodes (%v), want %d", len(refs), len(tasks), tasks, len(alive))
	}
}

func TestDefaultStrategyStaysOnTheDriversNode(t *testing.T) {
	if got := runtime.CurrentNodeID(); got != cl.headID {
		t.Fatalf("driver's node %s, want the head's %s (it connected to the head raylet)", name(got), name(cl.headID))
	}
	// The default prefers the local node while it is under half used: wait
	// until the leases of earlier tests are returned and reported.
	availableCPU(t)
	for i := range 3 {
		if _, node := spawnProbe(t); node != cl.headID {
			t.Errorf("actor %d with the default strategy on node %s, want the driver's node (head)", i, name(node))
		}
	}
	if node := taskNode(t); node != cl.headID {
		t.Errorf("task with the default strategy on node %s, want the driver's node (head)", name(node))
	}
}

func TestCustomResourcesPickTheNodeThatHasThem(t *testing.T) {
	for res, want := range map[string]string{"node_a": cl.aID, "node_b": cl.bID, "head_only": cl.headID} {
		if _, node := spawnProbe(t, actor.WithResources(map[string]float64{res: 1})); node != want {
			t.Errorf("actor needing %s on node %s, want %s", res, name(node), name(want))
		}
		if node := taskNode(t, task.WithResources(map[string]float64{"CPU": 1, res: 0.5})); node != want {
			t.Errorf("task needing %s on node %s, want %s", res, name(node), name(want))
		}
	}
}

func TestHardNodeAffinityLandsOnTheChosenNode(t *testing.T) {
	for _, id := range []string{cl.aID, cl.bID, cl.headID} {
		st := runtime.NodeAffinity(id, false)
		if _, node := spawnProbe(t, actor.WithStrategy(st)); node != id {
			t.Errorf("actor with hard affinity to %s on node %s", name(id), name(node))
		}
		if node := taskNode(t, task.WithStrategy(st)); node != id {
			t.Errorf("task with hard affinity to %s on node %s", name(id), name(node))
		}
		// Soft affinity to a node that fits also lands there.
		if node := taskNode(t, task.WithStrategy(runtime.NodeAffinity(id, true))); node != id {
			t.Errorf("task with soft affinity to %s on node %s", name(id), name(node))
		}
	}
}

func TestStrictSpreadWithMoreBundlesThanNodesIsInfeasibleAndReservesNothing(t *testing.T) {
	ctx := t.Context()
	alive := aliveIDs(t)
	before := availableCPU(t)
	bundles := make([]map[string]float64, len(alive)+1)
	for i := range bundles {
		bundles[i] = map[string]float64{"CPU": 0.5}
	}
	pg, err := runtime.CreatePlacementGroup(ctx, "too-spread", runtime.StrictSpread, bundles...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = pg.Remove(context.Background()) })
	wctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	err = pg.Wait(wctx)
	if !errors.Is(err, runtime.ErrInfeasible) {
		t.Fatalf("Wait of a STRICT_SPREAD group of %d bundles on %d nodes: %v, want ErrInfeasible", len(bundles), len(alive), err)
	}
	t.Logf("infeasible as expected: %v", err)
	// Several heartbeats later no node's available CPU shrank. (Waiting
	// IS the point here: nothing must happen within these heartbeats.)
	for range 5 {
		time.Sleep(heartbeat)
		for id, cpu := range availableCPU(t) {
			if cpu < before[id] {
				t.Fatalf("node %s: available CPU %g after the infeasible group, %g before: something was reserved", name(id), cpu, before[id])
			}
		}
	}
	st, err := runtime.ClusterState(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.ContainsFunc(st.Infeasible, func(r runtime.InfeasibleRequest) bool {
		return r.Kind == "placement_group" && r.Name == "too-spread"
	}) {
		t.Errorf("the state API does not list the infeasible group: %+v", st.Infeasible)
	}
}

// availableCPU is each alive node's available CPU, once every node reports
// all of its CPU free (leases of earlier tests linger briefly).
func availableCPU(t *testing.T) map[string]float64 {
	t.Helper()
	var out map[string]float64
	waitNodes(t, "every node's CPU free", func(nodes map[string]runtime.Node) bool {
		out = map[string]float64{}
		for id, n := range nodes {
			if !n.Alive {
				continue
			}
			if n.Available["CPU"] != n.Total["CPU"] {
				return false
			}
			out[id] = n.Available["CPU"]
		}
		return true
	})
	return out
}

func TestPlacementGroupStrategiesAndBundlePlacement(t *testing.T) {
	ctx := t.Context()
	alive := len(aliveIDs(t))
	for _, tc := range []struct {
		name     string
		strategy runtime.PlacementStrategy
		bundles  int
		distinct int // distinct nodes of the bundles, 0: don't check
	}{
		{"pack", runtime.Pack, 2, 1},
		{"strict-pack", runtime.StrictPack, 2, 1},
		{"spread", runtime.Spread, alive, alive},
		{"strict-spread", runtime.StrictSpread, alive, alive},
	} {
		t.Run(tc.name, func(t *testing.T) {
			bundles := make([]map[string]float64, tc.bundles)
			for i := range bundles {
				bundles[i] = map[string]float64{"CPU": 1}
			}
			pg, err := runtime.CreatePlacementGroup(ctx, tc.name, tc.strategy, bundles...)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { _ = pg.Remove(context.Background()) })
			wctx, cancel := context.WithTimeout(ctx, 20*time.Second)
			defer cancel()
			if err := pg.Wait(wctx); err != nil {
				t.Fatalf("Wait: %v", err)
			}
			where, err := pg.BundleNodes(ctx)
			if err != nil {
				t.Fatal(err)
			}
			if len(where) != tc.bundles {
				t.Fatalf("bundle nodes %v, want %d", where, tc.bundles)
			}
			if n := len(slices.Compact(slices.Sorted(slices.Values(where)))); n != tc.distinct {
				t.Errorf("bundles on %d distinct nodes %v, want %d", n, where, tc.distinct)
			}
			for i, want := range where {
				if _, node := spawnProbe(t, actor.WithStrategy(pg.Bundle(i))); node != want {
					t.Errorf("actor in bundle %d on node %s, want the bundle's node %s", i, name(node), name(want))
				}
				if node := taskNode(t, task.WithStrategy(pg.Bundle(i))); node != want {
					t.Errorf("task in bundle %d on node %s, want the bundle's node %s", i, name(node), name(want))
				}
			}
		})
	}
}

func TestRemovingAGroupKillsItsActor(t *testing.T) {
	ctx := t.Context()
	pg, err := runtime.CreatePlacementGroup(ctx, "doomed", runtime.Pack, map[string]float64{"CPU": 1})
	if err != nil {
		t.Fatal(err)
	}
	if err := pg.Wait(ctx); err != nil {
		t.Fatal(err)
	}
	h, _ := spawnProbe(t, actor.WithStrategy(pg.Bundle(0)))
	if err := pg.Remove(ctx); err != nil {
		t.Fatal(err)
	}
	defer func() {
		if t.Failed() {
			t.Logf("the last call after the group's removal: %v, want ErrActorDied", err)
		}
	}()
	testwait.Eventually(t, 10*time.Second, "ErrActorDied from a call after the group's removal", func() bool {
		_, err = probeNode.Remote(ctx, h).Get(ctx)
		return errors.Is(err, runtime.ErrActorDied)
	})
	t.Logf("after Remove: %v", err)
}

// TestNodeDeath is the node-death rule (testcluster.NodeDeath, also run by
// tests/e2e on processes): recovery of tasks, objects and actors, and
// affinity to the dead node.
func TestNodeDeath(t *testing.T) { testcluster.NodeDeath(t, cl) }

// TestCacheNodeDeath: a cache shard lost with its node turns into misses,
// then recovers (testcluster.CacheNodeDeath).
func TestCacheNodeDeath(t *testing.T) { testcluster.CacheNodeDeath(t, cl) }

func TestInfeasibleTaskIsListedAndRunsWhenANodeJoins(t *testing.T) {
	ctx := t.Context()
	need := map[string]float64{"late_res": 1}
	// Fail-fast: an error at once.
	fctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if _, err := nodeOf.Remote(fctx, task.WithResources(need), task.WithFailFast()).Get(fctx); !errors.Is(err, runtime.ErrInfeasible) || !strings.Contains(err.Error(), "late_res") {
		t.Errorf("fail-fast infeasible task: %v, want ErrInfeasible naming late_res", err)
	}
	if _, err := actor.Spawn(fctx, probeType, actor.WithResources(need), actor.WithFailFast()); !errors.Is(err, runtime.ErrInfeasible) || !strings.Contains(err.Error(), "late_res") {
		t.Errorf("fail-fast infeasible actor: %v, want ErrInfeasible naming late_res", err)
	}
	// Without fail-fast it waits, listed by the state API.
	ref := nodeOf.Remote(ctx, task.WithResources(need))
	var listed []runtime.InfeasibleRequest
	defer func() {
		if t.Failed() {
			t.Logf("the state API's infeasible list: %+v", listed)
		}
	}()
	testwait.Eventually(t, 15*time.Second, "the waiting task in the state API's infeasible list", func() bool {
		st, err := runtime.ClusterState(ctx)
		if err != nil {
			return false
		}
		listed = st.Infeasible
		return slices.ContainsFunc(st.Infeasible, func(r runtime.InfeasibleRequest) bool {
			return r.Kind == "task" && r.Resources["late_res"] == 1 && strings.Contains(r.Reason, "late_res")
		})
	})
	late := cl.Join(t, map[string]float64{"CPU": 1, "late_res": 1})
	gctx, cancel2 := context.WithTimeout(ctx, 30*time.Second)
	defer cancel2()
	node, err := ref.Get(gctx)
	if err != nil {
		t.Fatalf("the waiting task after a node with late_res joined: %v", err)
	}
	if node != late.NodeID().String() {
		t.Errorf("task ran on %s, want the new node", name(node))
	}
}

func TestNamedActorsNamespacesAndGetIfExists(t *testing.T) {
	ctx := t.Context()
	h1, _ := spawnProbe(t, actor.WithName("shared"), actor.WithNamespace("team-1"))
	h2, _ := spawnProbe(t, actor.WithName("shared"), actor.WithNamespace("team-2"))
	if h1.ID() == h2.ID() {
		t.Fatal("one name in two namespaces gave one actor")
	}
	for ns, want := range map[string]string{"team-1": h1.ID(), "team-2": h2.ID()} {
		got, err := actor.Get(ctx, probeType, "shared", actor.WithNamespace(ns))
		if err != nil || got.ID() != want {
			t.Errorf("Get in %s: %v, %v; want actor %s", ns, got.ID(), err, want)
		}
	}
	if _, err := actor.Get(ctx, probeType, "shared", actor.WithNamespace("team-3")); !errors.Is(err, runtime.ErrNotFound) {
		t.Errorf("Get in a namespace without it: %v, want ErrNotFound", err)
	}
	if h, err := actor.Spawn(ctx, probeType, actor.WithName("shared"), actor.WithNamespace("team-1")); err == nil {
		_ = actor.Kill(ctx, h)
		t.Error("a second actor of a taken name was created")
	}
	same, err := actor.Spawn(ctx, probeType, actor.WithName("shared"), actor.WithNamespace("team-1"), actor.WithGetIfExists())
	if err != nil || same.ID() != h1.ID() {
		t.Errorf("get-if-exists: %v, %v; want the live actor %s", same.ID(), err, h1.ID())
	}
	// A fresh name with get-if-exists creates it.
	fresh, err := actor.Spawn(ctx, probeType, actor.WithName("fresh"), actor.WithNamespace("team-1"), actor.WithGetIfExists())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = actor.Kill(context.Background(), fresh) })
	if fresh.ID() == h1.ID() {
		t.Error("get-if-exists with a new name returned another actor")
	}
}
