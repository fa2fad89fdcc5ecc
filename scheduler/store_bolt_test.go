package scheduler

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"path/filepath"
	"reflect"
	"slices"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/goray/goray/internal/errs"
	"github.com/goray/goray/internal/ids"
	"github.com/goray/goray/internal/testwait"
	pb "github.com/goray/goray/proto/goray/v1"
)

func openBolt(t *testing.T, path string) *BoltStore {
	t.Helper()
	s, err := OpenBoltStore(path)
	if err != nil {
		t.Fatalf("OpenBoltStore(%s): %v", path, err)
	}
	return s
}

func TestBoltStoreReopen(t *testing.T) {
	path := filepath.Join(t.TempDir(), "head", "state.db")
	s := openBolt(t, path)

	node := &NodeRecord{ID: ids.NewNodeID(), Address: "127.0.0.1:1", Total: map[string]float64{"CPU": 4},
		Available: map[string]float64{"CPU": 3}, Alive: true, IsHead: true}
	dead := &NodeRecord{ID: ids.NewNodeID(), Address: "127.0.0.1:2", Total: map[string]float64{}, Available: map[string]float64{}}
	job := &JobRecord{ID: ids.JobIDFromUint32(7), BinarySHA256: sha256.Sum256([]byte("bin")), DriverAddress: "127.0.0.1:3",
		Namespace: "ns", Entrypoint: "prog", Finished: true, FinishedAt: time.Now().UTC().Round(0)}
	aid := ids.NewActorID(job.ID)
	actor := &pb.ActorInfo{Spec: &pb.ActorSpec{ActorId: aid[:], JobId: job.ID[:], TypeName: "counter"},
		State: pb.ActorState_ACTOR_STATE_ALIVE, NodeId: node.ID[:], WorkerAddress: "127.0.0.1:4"}
	pgID := ids.NewPlacementGroupID(job.ID)
	pg := &pb.PlacementGroupInfo{PlacementGroupId: pgID[:], JobId: job.ID[:], Name: "g",
		Strategy: pb.PlacementStrategy_PLACEMENT_STRATEGY_PACK, State: pb.PlacementGroupState_PLACEMENT_GROUP_STATE_CREATED,
		Bundles: []*pb.Resources{{Amounts: map[string]float64{"CPU": 1}}}, BundleNodeIds: [][]byte{node.ID[:]}}
	for _, err := range []error{
		s.PutNode(node), s.PutNode(dead), s.PutJob(job), s.PutActor(actor), s.PutPlacementGroup(pg), s.PutNextJob(8),
	} {
		if err != nil {
			t.Fatalf("put: %v", err)
		}
	}
	// A change of available resources only is served from memory.
	hb := node.clone()
	hb.Available["CPU"] = 1
	if err := s.PutNode(hb); err != nil {
		t.Fatal(err)
	}
	if got, _ := s.GetNode(node.ID); got.Available["CPU"] != 1 {
		t.Fatalf("available CPU after a heartbeat-like put: got %v, want 1", got.Available["CPU"])
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}

	s = openBolt(t, path)
	defer s.Close()
	t.Run("nodes", func(t *testing.T) {
		got, ok := s.GetNode(node.ID)
		if !ok || !reflect.DeepEqual(got, node) {
			t.Fatalf("node after reopen: got %+v (%t), want %+v", got, ok, node)
		}
		if got, _ := s.GetNode(dead.ID); !reflect.DeepEqual(got, dead) {
			t.Fatalf("dead node after reopen: got %+v, want %+v", got, dead)
		}
		if n := len(s.ListNodes()); n != 2 {
			t.Fatalf("ListNodes: got %d, want 2", n)
		}
	})
	t.Run("jobs", func(t *testing.T) {
		got, ok := s.GetJob(job.ID)
		if !ok || !got.FinishedAt.Equal(job.FinishedAt) {
			t.Fatalf("job after reopen: got %+v (%t), want %+v", got, ok, job)
		}
		got.FinishedAt = job.FinishedAt
		if !reflect.DeepEqual(got, job) {
			t.Fatalf("job after reopen: got %+v, want %+v", got, job)
		}
		if n := s.NextJob(); n != 8 {
			t.Fatalf("NextJob: got %d, want 8", n)
		}
	})
	t.Run("actors", func(t *testing.T) {
		got, ok := s.GetActor(aid)
		if !ok || !proto.Equal(got, actor) {
			t.Fatalf("actor after reopen: got %v (%t), want %v", got, ok, actor)
		}
	})
	t.Run("placement groups", func(t *testing.T) {
		got := s.ListPlacementGroups()
		if len(got) != 1 || !proto.Equal(got[0], pg) {
			t.Fatalf("placement groups after reopen: got %v, want [%v]", got, pg)
		}
	})
	t.Run("second opener is refused", func(t *testing.T) {
		if s2, err := OpenBoltStore(path); err == nil {
			s2.Close()
			t.Fatal("second OpenBoltStore of an open file: got nil error, want one")
		}
	})
	t.Run("values are copies", func(t *testing.T) {
		got, _ := s.GetNode(node.ID)
		got.Total["CPU"] = 99
		if again, _ := s.GetNode(node.ID); again.Total["CPU"] != 4 {
			t.Fatalf("store changed through a returned node: got CPU %v, want 4", again.Total["CPU"])
		}
	})
}

// restartHead closes h and its store and serves a new Server on the same
// store file.
func restartHead(t *testing.T, h *head, store *BoltStore, cfg Config) (*head, *BoltStore) {
	t.Helper()
	h.srv.Close()
	path := store.Path()
	if err := store.Close(); err != nil {
		t.Fatal(err)
	}
	store = openBolt(t, path)
	t.Cleanup(func() { store.Close() })
	cfg.Store = store
	return startHead(t, cfg), store
}

func TestHeadRestartKeepsTables(t *testing.T) {
	dataDir := t.TempDir()
	store := openBolt(t, filepath.Join(dataDir, "state.db"))
	t.Cleanup(func() { store.Close() })
	cfg := Config{DataDir: dataDir, HeartbeatInterval: 50 * time.Millisecond, NodeTimeout: 2 * time.Second, Store: store}
	h := startHead(t, cfg)
	ctx := t.Context()
	a := startRaylet(t)
	h.register(t, a, map[string]float64{"CPU": 4})
	j := h.job(t)
	aid, _, err := h.createActor(t, j, actorOpts{name: "keeper", namespace: "ns"})
	if err != nil {
		t.Fatal(err)
	}
	pgID, _ := h.createPG(t, j, pb.PlacementStrategy_PLACEMENT_STRATEGY_PACK, map[string]float64{"CPU": 1})

	h, store = restartHead(t, h, store, cfg)

	t.Run("node", func(t *testing.T) {
		resp, err := h.client.ListNodes(ctx, &pb.ListNodesRequest{})
		if err != nil {
			t.Fatal(err)
		}
		if len(resp.GetNodes()) != 1 || !bytes.Equal(resp.GetNodes()[0].GetNodeId(), a.id[:]) || !resp.GetNodes()[0].GetAlive() {
			t.Fatalf("nodes after restart: got %v, want node %s alive", resp.GetNodes(), a.id)
		}
		hb, err := h.client.Heartbeat(ctx, &pb.HeartbeatRequest{NodeId: a.id[:]})
		if err != nil || hb.GetReregister() {
			t.Fatalf("heartbeat after restart: got reregister=%t (%v), want false", hb.GetReregister(), err)
		}
		// Registering again with the same ID (what a raylet does when told
		// to) keeps the node.
		h.register(t, a, map[string]float64{"CPU": 4})
	})
	t.Run("job", func(t *testing.T) {
		resp, err := h.client.GetJob(ctx, &pb.GetJobRequest{JobId: j[:]})
		if err != nil || resp.GetJob().GetFinished() {
			t.Fatalf("job after restart: got %v (%v), want it running", resp.GetJob(), err)
		}
		if next := h.job(t); next.Uint32() <= j.Uint32() {
			t.Fatalf("job registered after restart: got number %d, want more than %d", next.Uint32(), j.Uint32())
		}
	})
	t.Run("actor", func(t *testing.T) {
		got, err := h.client.GetActor(ctx, &pb.GetActorRequest{ActorId: aid[:]})
		if err != nil || got.GetActor().GetState() != pb.ActorState_ACTOR_STATE_ALIVE {
			t.Fatalf("actor after restart: got %v (%v), want ALIVE", got.GetActor(), err)
		}
		byName, err := h.client.GetActor(ctx, &pb.GetActorRequest{Name: "keeper", Namespace: "ns"})
		if err != nil || !bytes.Equal(byName.GetActor().GetSpec().GetActorId(), aid[:]) {
			t.Fatalf("named actor after restart: got %v (%v), want %s", byName.GetActor(), err, aid)
		}
	})
	t.Run("placement group", func(t *testing.T) {
		got, err := h.client.GetPlacementGroup(ctx, &pb.GetPlacementGroupRequest{PlacementGroupId: pgID[:]})
		if err != nil || got.GetPlacementGroup().GetState() != pb.PlacementGroupState_PLACEMENT_GROUP_STATE_CREATED {
			t.Fatalf("placement group after restart: got %v (%v), want CREATED", got.GetPlacementGroup(), err)
		}
		if _, err := h.client.RemovePlacementGroup(ctx, &pb.RemovePlacementGroupRequest{PlacementGroupId: pgID[:]}); err != nil {
			t.Fatal(err)
		}
		// The restarted head knows which raylet holds the bundle.
		testwait.Eventually(t, 5*time.Second, "the bundle to be returned", func() bool { return a.bundleStates(pgID)["returned"] == 1 })
	})
	_ = store
}

// registerDriverJob registers a job with a driver address.
func (h *head) registerDriverJob(t *testing.T) ids.JobID {
	t.Helper()
	sum := sha256.Sum256([]byte("binary"))
	resp, err := h.client.RegisterJob(t.Context(), &pb.RegisterJobRequest{BinarySha256: sum[:], BinarySize: 6,
		DriverAddress: "127.0.0.1:9", Namespace: "ns", Entrypoint: "driver"})
	if err != nil {
		t.Fatalf("RegisterJob: %v", err)
	}
	j, err := ids.ParseJobID(resp.GetJobId())
	if err != nil {
		t.Fatal(err)
	}
	return j
}

func TestHeadRestartDriverGrace(t *testing.T) {
	dataDir := t.TempDir()
	store := openBolt(t, filepath.Join(dataDir, "state.db"))
	t.Cleanup(func() { store.Close() })
	const grace = 600 * time.Millisecond
	cfg := Config{DataDir: dataDir, HeartbeatInterval: 20 * time.Millisecond, NodeTimeout: 200 * time.Millisecond,
		DriverReconnectTimeout: grace, Store: store}
	h := startHead(t, cfg)
	a := startRaylet(t)
	h.register(t, a, map[string]float64{"CPU": 4})
	back, gone := h.registerDriverJob(t), h.registerDriverJob(t)
	goneActor, _, err := h.createActor(t, gone, actorOpts{})
	if err != nil {
		t.Fatal(err)
	}

	h, _ = restartHead(t, h, store, cfg)
	started := time.Now()
	// Keep node a alive, and reconnect the driver of job "back".
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	stream, err := h.client.KeepJobAlive(ctx, &pb.KeepJobAliveRequest{JobId: back[:]})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := stream.Header(); err != nil {
		t.Fatal(err)
	}
	finished := func(j ids.JobID) bool {
		_, _ = h.client.Heartbeat(t.Context(), &pb.HeartbeatRequest{NodeId: a.id[:]})
		resp, err := h.client.GetJob(t.Context(), &pb.GetJobRequest{JobId: j[:]})
		if err != nil {
			t.Fatal(err)
		}
		return resp.GetJob().GetFinished()
	}
	if finished(gone) {
		t.Fatalf("job %s right after the restart: got finished, want running until the grace period passes", gone)
	}
	testwait.Eventually(t, 5*time.Second, "the job whose driver never came back to finish", func() bool { return finished(gone) })
	if waited := time.Since(started); waited < grace/2 {
		t.Errorf("job finished %s after the restart, want about the grace period %s", waited, grace)
	}
	// The raylets are told right after the job is marked finished.
	testwait.Eventually(t, 5*time.Second, "the raylet to be told the job finished", func() bool { return a.wasFinished(gone) })
	got, err := h.client.GetActor(t.Context(), &pb.GetActorRequest{ActorId: goneActor[:]})
	if err != nil || got.GetActor().GetState() != pb.ActorState_ACTOR_STATE_DEAD {
		t.Errorf("actor of the finished job: got %v (%v), want DEAD", got.GetActor(), err)
	}
	// The point: past the grace the reconnected job is still running.
	time.Sleep(grace)
	if finished(back) {
		t.Fatalf("job %s whose driver reconnected: got finished, want running", back)
	}
	// Its driver going away now finishes it at once, as before the restart.
	cancel()
	testwait.Eventually(t, 5*time.Second, "the reconnected job to finish when its stream ends", func() bool { return finished(back) })
}

func TestDeadNodeMustRejoinAsNewNode(t *testing.T) {
	h := startHead(t, Config{HeartbeatInterval: 20 * time.Millisecond, NodeTimeout: 100 * time.Millisecond})
	a := startRaylet(t)
	h.register(t, a, map[string]float64{"CPU": 1})
	testwait.Eventually(t, 5*time.Second, "the silent node to be declared dead", func() bool {
		resp, err := h.client.ListNodes(t.Context(), &pb.ListNodesRequest{})
		return err == nil && len(resp.GetNodes()) == 1 && !resp.GetNodes()[0].GetAlive()
	})
	if hb, err := h.client.Heartbeat(t.Context(), &pb.HeartbeatRequest{NodeId: a.id[:]}); err != nil || !hb.GetReregister() {
		t.Fatalf("heartbeat of a dead node: got reregister=%t (%v), want true", hb.GetReregister(), err)
	}
	_, err := h.client.RegisterNode(t.Context(), &pb.RegisterNodeRequest{NodeId: a.id[:], Address: a.addr,
		Total: &pb.Resources{Amounts: map[string]float64{"CPU": 1}}})
	if !errors.Is(errs.FromStatus(err), errs.ErrNodeDied) {
		t.Fatalf("RegisterNode of a dead node's ID: got %v, want a node-died error", err)
	}
	fresh := ids.NewNodeID()
	if _, err := h.client.RegisterNode(t.Context(), &pb.RegisterNodeRequest{NodeId: fresh[:], Address: a.addr,
		Total: &pb.Resources{Amounts: map[string]float64{"CPU": 1}}}); err != nil {
		t.Fatalf("RegisterNode under a new ID: %v", err)
	}
	resp, err := h.client.ListNodes(t.Context(), &pb.ListNodesRequest{})
	if err != nil {
		t.Fatal(err)
	}
	alive := slices.IndexFunc(resp.GetNodes(), func(n *pb.NodeInfo) bool { return bytes.Equal(n.GetNodeId(), fresh[:]) && n.GetAlive() })
	if alive < 0 {
		t.Fatalf("nodes: got %v, want the new incarnation alive", resp.GetNodes())
	}
}
