package raylet

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"github.com/goray/goray/internal/rpc"
	"log/slog"
	"maps"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/goray/goray/internal/errs"
	"github.com/goray/goray/internal/ids"
	"github.com/goray/goray/internal/sched"
	"github.com/goray/goray/internal/testwait"
	pb "github.com/goray/goray/proto/goray/v1"
)

// Fast heartbeats so that joins and deaths show in the views quickly.
const (
	testHeartbeat   = 100 * time.Millisecond
	testNodeTimeout = time.Second
)

func startFastHead(t *testing.T, res map[string]float64, log *slog.Logger) *Raylet {
	t.Helper()
	if log == nil {
		log = testLogger(t)
	}
	return startTestHead(t, Config{
		Resources: res, MaxWorkersPerJob: 4,
		TokenFile: filepath.Join(t.TempDir(), "token"), Logger: log, Stderr: t.Output(),
	}, headOpts{heartbeat: testHeartbeat, nodeTimeout: testNodeTimeout})
}

// cluster is a head and two joined raylets with distinct custom resources.
type cluster struct {
	head, a, b *Raylet
	job        ids.JobID
}

func startCluster(t *testing.T) *cluster {
	t.Helper()
	bin := buildTestWorker(t)
	head := startFastHead(t, map[string]float64{"CPU": 2, "head_only": 1}, nil)
	c := &cluster{
		head: head,
		a:    startNode(t, head, map[string]float64{"CPU": 2, "a_only": 1}),
		b:    startNode(t, head, map[string]float64{"CPU": 2, "b_only": 1}),
		job:  registerJob(t, head, bin),
	}
	waitView(t, head, head, c.a, c.b)
	return c
}

// waitView waits until r's cluster view lists the raylets as alive.
func waitView(t *testing.T, r *Raylet, want ...*Raylet) {
	t.Helper()
	testwait.Eventually(t, 10*time.Second, fmt.Sprintf("%d nodes alive in node %s's view", len(want), r.NodeID()), func() bool {
		for _, w := range want {
			if v := r.view.node(w.nodeID); v == nil || !v.GetAlive() {
				return false
			}
		}
		return true
	})
}

// waitIdle waits until r's view shows the nodes with everything available.
func waitIdle(t *testing.T, r *Raylet, nodes ...*Raylet) {
	t.Helper()
	testwait.Eventually(t, 10*time.Second, fmt.Sprintf("idle nodes in %s's view", r.NodeID()), func() bool {
		for _, n := range nodes {
			v := r.view.node(n.nodeID)
			if v == nil || !maps.Equal(v.GetTotal().GetAmounts(), v.GetAvailable().GetAmounts()) {
				return false
			}
		}
		return true
	})
}

func leaseReq(job ids.JobID, res map[string]float64) *pb.RequestWorkerLeaseRequest {
	return &pb.RequestWorkerLeaseRequest{JobId: job[:], Resources: &pb.Resources{Amounts: res}, FunctionName: "test.fn"}
}

func mustLease(t *testing.T, c *rpc.NodeClient, req *pb.RequestWorkerLeaseRequest) *pb.RequestWorkerLeaseResponse {
	t.Helper()
	resp, err := c.RequestWorkerLease(callCtx(t), req)
	if err != nil {
		t.Fatalf("RequestWorkerLease(%v, %v): %v", req.GetResources().GetAmounts(), req.GetSchedulingStrategy(), err)
	}
	return resp
}

func giveBack(t *testing.T, c *rpc.NodeClient, resp *pb.RequestWorkerLeaseResponse) {
	t.Helper()
	if len(resp.GetLeaseId()) == 0 {
		return
	}
	if _, err := c.ReturnWorkerLease(callCtx(t), &pb.ReturnWorkerLeaseRequest{LeaseId: resp.GetLeaseId()}); err != nil {
		t.Fatalf("ReturnWorkerLease: %v", err)
	}
}

// where names the node a lease response points at: the granting node or
// the spillback target.
func (c *cluster) where(resp *pb.RequestWorkerLeaseResponse) string {
	id := resp.GetNodeId()
	if len(resp.GetSpillbackNodeId()) != 0 {
		id = resp.GetSpillbackNodeId()
	}
	for name, r := range map[string]*Raylet{"head": c.head, "a": c.a, "b": c.b} {
		if bytes.Equal(id, r.nodeID[:]) {
			return name
		}
	}
	return "unknown node " + string(id)
}

func TestLeaseStrategies(t *testing.T) {
	c := startCluster(t)
	head := nodeClient(t, c.head)

	t.Run("default prefers the local node under the threshold", func(t *testing.T) {
		resp := mustLease(t, head, leaseReq(c.job, map[string]float64{"CPU": 0.5}))
		defer giveBack(t, head, resp)
		if len(resp.GetLeaseId()) == 0 || c.where(resp) != "head" {
			t.Fatalf("got %v (on %s), want a lease granted on the head", resp, c.where(resp))
		}
	})

	t.Run("default spills back to the node with the resource", func(t *testing.T) {
		resp := mustLease(t, head, leaseReq(c.job, map[string]float64{"a_only": 1}))
		if c.where(resp) != "a" || resp.GetSpillbackAddress() != c.a.Address() {
			t.Fatalf("got %v (to %s), want a spillback to node a at %s", resp, c.where(resp), c.a.Address())
		}
		// The receiver queues it (no_spillback) and grants it.
		req := leaseReq(c.job, map[string]float64{"a_only": 1})
		req.NoSpillback = true
		a := nodeClient(t, c.a)
		got := mustLease(t, a, req)
		defer giveBack(t, a, got)
		if len(got.GetLeaseId()) == 0 || c.where(got) != "a" {
			t.Fatalf("spilled request at node a: got %v, want granted on a", got)
		}
	})

	t.Run("default spreads past the threshold", func(t *testing.T) {
		// One of the head's two CPUs leased: utilisation 0.5, not under it.
		held := mustLease(t, head, leaseReq(c.job, map[string]float64{"CPU": 1}))
		defer giveBack(t, head, held)
		if c.where(held) != "head" {
			t.Fatalf("first lease: got it on %s, want the head", c.where(held))
		}
		resp := mustLease(t, head, leaseReq(c.job, map[string]float64{"CPU": 1}))
		defer giveBack(t, head, resp)
		if w := c.where(resp); w != "a" && w != "b" || len(resp.GetSpillbackAddress()) == 0 {
			t.Fatalf("second lease: got %v (on %s), want a spillback to an idle node", resp, w)
		}
	})

	t.Run("spread alternates nodes", func(t *testing.T) {
		spread := &pb.SchedulingStrategy{Kind: pb.SchedulingStrategy_KIND_SPREAD}
		// Earlier leases (the subtests above, and a few more default ones on
		// the head now) must not bias where SPREAD sends a burst: it goes
		// round the nodes whatever this raylet placed before.
		for range 3 {
			giveBack(t, head, mustLease(t, head, leaseReq(c.job, map[string]float64{"CPU": 0.25})))
		}
		// Start from idle nodes, as the head sees them.
		waitIdle(t, c.head, c.a, c.b)
		count := map[string]int{}
		var seq []string
		for range 6 {
			req := leaseReq(c.job, map[string]float64{"CPU": 0.25})
			req.SchedulingStrategy = spread
			resp := mustLease(t, head, req)
			defer giveBack(t, head, resp)
			w := c.where(resp)
			count[w]++
			seq = append(seq, w)
		}
		if count["head"] != 2 || count["a"] != 2 || count["b"] != 2 {
			t.Fatalf("6 SPREAD leases went to %v (counts %v), want 2 on each of the 3 nodes", seq, count)
		}
		if seq[0] == seq[1] || seq[1] == seq[2] || seq[0] == seq[2] {
			t.Errorf("the first 3 SPREAD leases went to %v, want 3 distinct nodes", seq[:3])
		}
		// A spilled SPREAD request queues at its receiver.
		req := leaseReq(c.job, map[string]float64{"CPU": 0.25})
		req.SchedulingStrategy, req.NoSpillback = spread, true
		b := nodeClient(t, c.b)
		resp := mustLease(t, b, req)
		defer giveBack(t, b, resp)
		if len(resp.GetLeaseId()) == 0 || c.where(resp) != "b" {
			t.Fatalf("spilled SPREAD request at b: got %v, want granted on b", resp)
		}
	})

	affinity := func(node []byte, soft bool) *pb.SchedulingStrategy {
		return &pb.SchedulingStrategy{Kind: pb.SchedulingStrategy_KIND_NODE_AFFINITY, NodeId: node, Soft: soft}
	}

	t.Run("hard node affinity to a joined node lands there", func(t *testing.T) {
		req := leaseReq(c.job, map[string]float64{"CPU": 1})
		req.SchedulingStrategy = affinity(c.b.nodeID[:], false)
		resp := mustLease(t, head, req)
		if c.where(resp) != "b" || resp.GetSpillbackAddress() != c.b.Address() {
			t.Fatalf("got %v (to %s), want a spillback to node b", resp, c.where(resp))
		}
		req.NoSpillback = true
		b := nodeClient(t, c.b)
		got := mustLease(t, b, req)
		defer giveBack(t, b, got)
		if len(got.GetLeaseId()) == 0 || c.where(got) != "b" {
			t.Fatalf("at node b: got %v, want granted on b", got)
		}
	})

	t.Run("hard node affinity to a node that can never fit it fails", func(t *testing.T) {
		req := leaseReq(c.job, map[string]float64{"a_only": 1})
		req.SchedulingStrategy = affinity(c.head.nodeID[:], false)
		_, err := head.RequestWorkerLease(callCtx(t), req)
		err = errs.FromStatus(err)
		if !errors.Is(err, errs.ErrInfeasible) || !strings.Contains(err.Error(), c.head.NodeID().String()) || !strings.Contains(err.Error(), "a_only") {
			t.Fatalf("got %v, want ErrInfeasible naming node %s and a_only", err, c.head.NodeID())
		}
		// Soft: elsewhere.
		req.SchedulingStrategy = affinity(c.head.nodeID[:], true)
		if resp := mustLease(t, head, req); c.where(resp) != "a" {
			t.Fatalf("soft: got %v (to %s), want a spillback to a", resp, c.where(resp))
		}
	})

	t.Run("hard node affinity to an unknown node fails at once", func(t *testing.T) {
		unknown := ids.NewNodeID()
		req := leaseReq(c.job, map[string]float64{"CPU": 1})
		req.SchedulingStrategy = affinity(unknown[:], false)
		start := time.Now()
		_, err := head.RequestWorkerLease(callCtx(t), req)
		err = errs.FromStatus(err)
		want := "node affinity: node " + unknown.String() + " is dead or not in the cluster"
		if !errors.Is(err, errs.ErrInfeasible) || !strings.Contains(err.Error(), want) {
			t.Fatalf("got %v, want ErrInfeasible %q", err, want)
		}
		if took := time.Since(start); took > 5*time.Second {
			t.Errorf("took %s, want at once", took)
		}
	})

	t.Run("node affinity to a dead node", func(t *testing.T) {
		gone := startNode(t, c.head, map[string]float64{"CPU": 1, "gone_only": 1})
		waitView(t, c.head, gone)
		id := gone.NodeID()
		gone.Stop()
		testwait.Eventually(t, 15*time.Second, fmt.Sprintf("stopped node %s dead in the head's view", id), func() bool {
			n := c.head.view.node(id)
			return n != nil && !n.GetAlive()
		})

		req := leaseReq(c.job, map[string]float64{"CPU": 1})
		req.SchedulingStrategy = affinity(id[:], false)
		start := time.Now()
		_, err := head.RequestWorkerLease(callCtx(t), req)
		err = errs.FromStatus(err)
		want := "node affinity: node " + id.String() + " is dead or not in the cluster"
		if !errors.Is(err, errs.ErrInfeasible) || !strings.Contains(err.Error(), want) {
			t.Fatalf("hard: got %v, want ErrInfeasible %q", err, want)
		}
		if took := time.Since(start); took > 5*time.Second {
			t.Errorf("hard: took %s, want at once", took)
		}

		req.SchedulingStrategy = affinity(id[:], true)
		resp := mustLease(t, head, req)
		defer giveBack(t, head, resp)
		if w := c.where(resp); w != "head" && w != "a" && w != "b" {
			t.Fatalf("soft: got %v (on %s), want it placed on an alive node", resp, w)
		}
	})
}

func TestInfeasibleLeaseWaitsUntilANodeJoins(t *testing.T) {
	bin := buildTestWorker(t)
	var logs syncBuffer
	log := slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelWarn}))
	head := startFastHead(t, map[string]float64{"CPU": 2}, log)
	job := registerJob(t, head, bin)
	client := nodeClient(t, head)

	t.Run("fail fast", func(t *testing.T) {
		req := leaseReq(job, map[string]float64{"tpu": 1})
		req.FailFast = true
		start := time.Now()
		_, err := client.RequestWorkerLease(callCtx(t), req)
		err = errs.FromStatus(err)
		if !errors.Is(err, errs.ErrInfeasible) || !strings.Contains(err.Error(), `no node has resource "tpu"`) {
			t.Fatalf("got %v, want ErrInfeasible naming tpu", err)
		}
		if took := time.Since(start); took > 5*time.Second {
			t.Errorf("took %s, want at once", took)
		}
	})

	type result struct {
		resp *pb.RequestWorkerLeaseResponse
		err  error
	}
	done := make(chan result, 1)
	go func() {
		resp, err := client.RequestWorkerLease(callCtx(t), leaseReq(job, map[string]float64{"tpu": 1}))
		done <- result{resp, err}
	}()

	// It waits, listed in every heartbeat, logged once.
	var inf []*pb.InfeasibleRequest
	testwait.Eventually(t, 10*time.Second, "one infeasible request in the heartbeat", func() bool {
		inf = head.heartbeatRequest().GetInfeasible()
		return len(inf) == 1
	})
	if q := inf[0]; q.GetKind() != "task" || q.GetName() != "test.fn" || !bytes.Equal(q.GetJobId(), job[:]) ||
		q.GetResources().GetAmounts()["tpu"] != 1 || !strings.Contains(q.GetReason(), `"tpu"`) {
		t.Fatalf("heartbeat infeasible entry: got %v", q)
	}
	// The point: it keeps waiting through several re-evaluations.
	time.Sleep(5 * testHeartbeat)
	select {
	case r := <-done:
		t.Fatalf("infeasible request returned %v, %v before a node could fit it; want it to wait", r.resp, r.err)
	default:
	}
	if n := strings.Count(logs.String(), "lease request is infeasible"); n != 1 {
		t.Errorf("infeasible warnings logged: got %d, want 1:\n%s", n, logs.String())
	}
	for _, want := range []string{"function=test.fn", "job=" + job.String(), "tpu:1", `missing="no node has resource \"tpu\"`} {
		if !strings.Contains(logs.String(), want) {
			t.Errorf("infeasible warning: got %q, want it to contain %q", logs.String(), want)
		}
	}
	// The head's state API, when it lists infeasible requests.
	if st, err := rpc.NewHeadClient(dial(t, head.Address(), head.Token())).GetClusterState(callCtx(t), &pb.GetClusterStateRequest{}); err == nil {
		if len(st.GetInfeasible()) == 0 {
			t.Logf("note: GetClusterState lists no infeasible requests yet (head side pending)")
		}
	} else if status.Code(err) != codes.Unimplemented {
		t.Errorf("GetClusterState: %v", err)
	}

	// A node with a tpu joins: the request goes there.
	tpu := startNode(t, head, map[string]float64{"CPU": 1, "tpu": 1})
	var r result
	select {
	case r = <-done:
	case <-time.After(10 * time.Second):
		t.Fatalf("infeasible request still waiting 10s after a node with the resource joined")
	}
	if r.err != nil || r.resp.GetSpillbackAddress() != tpu.Address() {
		t.Fatalf("after the tpu node joined: got %v, %v, want a spillback to %s", r.resp, r.err, tpu.Address())
	}
	req := leaseReq(job, map[string]float64{"tpu": 1})
	req.NoSpillback = true
	tc := nodeClient(t, tpu)
	got := mustLease(t, tc, req)
	giveBack(t, tc, got)
	if len(got.GetLeaseId()) == 0 || !bytes.Equal(got.GetNodeId(), tpu.nodeID[:]) {
		t.Fatalf("at the tpu node: got %v, want granted", got)
	}
	if inf := head.heartbeatRequest().GetInfeasible(); len(inf) != 0 {
		t.Errorf("heartbeat still lists %v as infeasible", inf)
	}

	t.Run("the request's context ends the wait", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(t.Context(), 300*time.Millisecond)
		defer cancel()
		_, err := client.RequestWorkerLease(ctx, leaseReq(job, map[string]float64{"nothing_has_it": 1}))
		if status.Code(err) != codes.DeadlineExceeded {
			t.Fatalf("got %v, want DeadlineExceeded", err)
		}
		testwait.Eventually(t, 5*time.Second, "heartbeat without the abandoned infeasible request", func() bool {
			return len(head.heartbeatRequest().GetInfeasible()) == 0
		})
	})
}

func TestPlacementGroupBundles(t *testing.T) {
	bin := buildTestWorker(t)
	head := startFastHead(t, map[string]float64{"CPU": 4, "memory": 1000}, nil)
	job := registerJob(t, head, bin)
	client := nodeClient(t, head)
	pg := ids.NewPlacementGroupID(job)
	bundle := map[string]float64{"CPU": 2}

	resOf := func() (total, avail map[string]float64) {
		return head.leases.resources()
	}
	prepare := func(index int32, res map[string]float64) error {
		_, err := client.PrepareBundle(callCtx(t), &pb.PrepareBundleRequest{PlacementGroupId: pg[:], BundleIndex: index, Resources: &pb.Resources{Amounts: res}})
		return err
	}
	commit := func(index int32) error {
		_, err := client.CommitBundle(callCtx(t), &pb.CommitBundleRequest{PlacementGroupId: pg[:], BundleIndex: index})
		return err
	}
	ret := func(index int32) {
		t.Helper()
		if _, err := client.ReturnBundle(callCtx(t), &pb.ReturnBundleRequest{PlacementGroupId: pg[:], BundleIndex: index}); err != nil {
			t.Fatalf("ReturnBundle(%d): %v", index, err)
		}
	}

	if err := prepare(0, bundle); err != nil {
		t.Fatalf("PrepareBundle: %v", err)
	}
	if err := prepare(0, bundle); err != nil {
		t.Fatalf("PrepareBundle again: %v", err)
	}
	if _, avail := resOf(); avail["CPU"] != 2 {
		t.Fatalf("available CPU after preparing a 2-CPU bundle (twice): got %v, want 2", avail["CPU"])
	}
	if err := prepare(1, map[string]float64{"CPU": 3}); status.Code(err) != codes.ResourceExhausted {
		t.Errorf("PrepareBundle of more than is available: got %v, want ResourceExhausted", err)
	}
	if err := errs.FromStatus(prepare(1, map[string]float64{"CPU": 10})); !errors.Is(err, errs.ErrInfeasible) {
		t.Errorf("PrepareBundle of more than the node has: got %v, want ErrInfeasible", err)
	}
	if err := errs.FromStatus(commit(5)); !errors.Is(err, errs.ErrNotFound) {
		t.Errorf("CommitBundle of an unprepared bundle: got %v, want ErrNotFound", err)
	}

	if err := commit(0); err != nil {
		t.Fatalf("CommitBundle: %v", err)
	}
	if err := commit(0); err != nil {
		t.Fatalf("CommitBundle again: %v", err)
	}
	indexed, wildcard := sched.IndexedName("CPU", pg, 0), sched.WildcardName("CPU", pg)
	total, avail := resOf()
	if total[indexed] != 2 || total[wildcard] != 2 || avail[indexed] != 2 || avail[wildcard] != 2 || total["CPU"] != 4 || avail["CPU"] != 2 {
		t.Fatalf("after commit: total %v, available %v; want %s and %s at 2, CPU 4 total and 2 available", total, avail, indexed, wildcard)
	}
	info, err := client.GetNodeInfo(callCtx(t), &pb.GetNodeInfoRequest{})
	if err != nil || info.GetTotal().GetAmounts()[indexed] != 2 {
		t.Fatalf("GetNodeInfo total: got %v, %v, want %s: 2", info.GetTotal(), err, indexed)
	}
	if hb := head.heartbeatRequest(); hb.GetTotal().GetAmounts()[wildcard] != 2 {
		t.Errorf("heartbeat total: got %v, want %s: 2", hb.GetTotal(), wildcard)
	}

	// A lease in bundle 0 and an actor in any bundle of the group.
	pgStrategy := &pb.SchedulingStrategy{Kind: pb.SchedulingStrategy_KIND_PLACEMENT_GROUP, PlacementGroupId: pg[:], BundleIndex: 0}
	req := leaseReq(job, sched.InBundle(map[string]float64{"CPU": 1}, pg, 0))
	req.SchedulingStrategy = pgStrategy
	l := mustLease(t, client, req)
	if len(l.GetLeaseId()) == 0 {
		t.Fatalf("lease in bundle 0: got %v, want granted", l)
	}
	leaseWorker := head.pool.lookupWorker(ids.WorkerID(l.GetWorkerId()))
	if leaseWorker == nil {
		t.Fatalf("leased worker %x unknown", l.GetWorkerId())
	}
	pid := leaseWorker.pid

	actorID := ids.NewActorID(job)
	if _, err := client.StartActor(callCtx(t), &pb.StartActorRequest{Spec: &pb.ActorSpec{
		ActorId: actorID[:], JobId: job[:], TypeName: "Counter",
		Resources:          &pb.Resources{Amounts: sched.InBundle(map[string]float64{"CPU": 0.5}, pg, -1)},
		SchedulingStrategy: &pb.SchedulingStrategy{Kind: pb.SchedulingStrategy_KIND_PLACEMENT_GROUP, PlacementGroupId: pg[:], BundleIndex: -1},
	}}); err != nil {
		t.Fatalf("CreateActor in the group: %v", err)
	}
	if _, avail := resOf(); avail[indexed] != 1 || avail[wildcard] != 0.5 {
		t.Fatalf("available after a lease in bundle 0 and an actor in the group: got %v, want %s 1, %s 0.5", avail, indexed, wildcard)
	}

	// A lease that waits for more of the bundle than is left.
	waitErr := make(chan error, 1)
	go func() {
		req := leaseReq(job, sched.InBundle(map[string]float64{"CPU": 2}, pg, 0))
		req.SchedulingStrategy = pgStrategy
		_, err := client.RequestWorkerLease(callCtx(t), req)
		waitErr <- err
	}()
	testwait.Eventually(t, 10*time.Second, "the lease waiting for the bundle's resources", func() bool {
		head.leases.mu.Lock()
		defer head.leases.mu.Unlock()
		return len(head.leases.waiters) == 1
	})

	ret(0)
	ret(0) // unknown now: no error

	total, avail = resOf()
	for k := range total {
		if sched.IsBundleResource(k) {
			t.Errorf("total after ReturnBundle still has %s: %v", k, total)
		}
	}
	for k := range avail {
		if sched.IsBundleResource(k) {
			t.Errorf("available after ReturnBundle still has %s: %v", k, avail)
		}
	}
	if avail["CPU"] != 4 || total["CPU"] != 4 {
		t.Errorf("CPU after ReturnBundle: total %v available %v, want 4 and 4", total["CPU"], avail["CPU"])
	}
	actorLeft := head.pool.lookupActor(actorID) != nil || head.leases.holdsActor(actorID)
	if actorLeft {
		t.Errorf("actor in the returned group still on the books")
	}
	select {
	case err := <-waitErr:
		if err := errs.FromStatus(err); !errors.Is(err, errs.ErrInfeasible) {
			t.Errorf("lease waiting in the returned bundle: got %v, want ErrInfeasible", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatalf("lease waiting in the returned bundle still waits 10s later")
	}
	testwait.Eventually(t, 10*time.Second, fmt.Sprintf("end of task worker pid %d of the returned bundle", pid), func() bool { return !alive(pid) })
	// Its lease is gone with it; returning it is harmless and frees nothing twice.
	testwait.Eventually(t, 10*time.Second, "release of the killed worker's lease", func() bool {
		return head.leases.lookupLease(ids.LeaseID(l.GetLeaseId())) == nil
	})
	giveBack(t, client, l)
	total, avail = resOf()
	if !maps.Equal(total, avail) {
		t.Errorf("after everything returned: total %v, available %v; want equal", total, avail)
	}
	if keys := slices.Collect(maps.Keys(total)); len(keys) != 2 {
		t.Errorf("node resources after ReturnBundle: got %v, want CPU and memory only", keys)
	}

	t.Run("a prepared bundle that is returned gives its resources back", func(t *testing.T) {
		if err := prepare(3, map[string]float64{"CPU": 1, "memory": 100}); err != nil {
			t.Fatalf("PrepareBundle: %v", err)
		}
		ret(3)
		if total, avail := resOf(); !maps.Equal(total, avail) {
			t.Errorf("total %v, available %v; want equal", total, avail)
		}
	})

	t.Run("a lease for a group this node does not hold", func(t *testing.T) {
		other := ids.NewPlacementGroupID(job)
		req := leaseReq(job, sched.InBundle(map[string]float64{"CPU": 1}, other, 0))
		req.FailFast = true
		_, err := client.RequestWorkerLease(callCtx(t), req)
		if err := errs.FromStatus(err); !errors.Is(err, errs.ErrInfeasible) || !strings.Contains(err.Error(), other.String()) {
			t.Errorf("got %v, want ErrInfeasible naming the group's resource", err)
		}
	})
}

func TestReturnOneOfTwoBundles(t *testing.T) {
	bin := buildTestWorker(t)
	head := startFastHead(t, map[string]float64{"CPU": 4, "memory": 1000}, nil)
	job := registerJob(t, head, bin)
	client := nodeClient(t, head)
	pg := ids.NewPlacementGroupID(job)
	for i := range int32(2) {
		if _, err := client.PrepareBundle(callCtx(t), &pb.PrepareBundleRequest{PlacementGroupId: pg[:], BundleIndex: i, Resources: &pb.Resources{Amounts: map[string]float64{"CPU": 1}}}); err != nil {
			t.Fatalf("PrepareBundle(%d): %v", i, err)
		}
		if _, err := client.CommitBundle(callCtx(t), &pb.CommitBundleRequest{PlacementGroupId: pg[:], BundleIndex: i}); err != nil {
			t.Fatalf("CommitBundle(%d): %v", i, err)
		}
	}
	inOne := mustLease(t, client, leaseReq(job, sched.InBundle(map[string]float64{"CPU": 1}, pg, 1)))
	inAny := mustLease(t, client, leaseReq(job, sched.InBundle(map[string]float64{"CPU": 1}, pg, -1)))
	defer giveBack(t, client, inOne)
	pidOf := func(l *pb.RequestWorkerLeaseResponse) int {
		return head.pool.lookupWorker(ids.WorkerID(l.GetWorkerId())).pid
	}
	pidOne, pidAny := pidOf(inOne), pidOf(inAny)

	// Bundle 0 leaves: the group keeps one CPU here, which the lease in
	// bundle 1 holds, so the "any bundle" lease goes.
	if _, err := client.ReturnBundle(callCtx(t), &pb.ReturnBundleRequest{PlacementGroupId: pg[:], BundleIndex: 0}); err != nil {
		t.Fatalf("ReturnBundle: %v", err)
	}
	testwait.Eventually(t, 10*time.Second, `end of the worker of the "any bundle" lease`, func() bool { return !alive(pidAny) })
	if !alive(pidOne) {
		t.Errorf("worker of the lease in bundle 1 was killed; want it kept")
	}
	total, avail := head.leases.resources()
	wild, one, zero := sched.WildcardName("CPU", pg), sched.IndexedName("CPU", pg, 1), sched.IndexedName("CPU", pg, 0)
	if total[wild] != 1 || avail[wild] != 0 || total[one] != 1 || avail[one] != 0 || total["CPU"] != 4 || avail["CPU"] != 3 {
		t.Errorf("after returning bundle 0: total %v, available %v; want %s and %s 1 total, 0 available; CPU 4 and 3", total, avail, wild, one)
	}
	if _, ok := total[zero]; ok {
		t.Errorf("total still has %s: %v", zero, total)
	}
}
