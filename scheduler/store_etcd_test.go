package scheduler

import (
	"errors"
	"log/slog"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/goray/goray/internal/coordsrv"
	"github.com/goray/goray/internal/ids"
	"github.com/goray/goray/internal/sched"
	pb "github.com/goray/goray/proto/goray/v1"
)

func testEtcd(t *testing.T) *clientv3.Client {
	t.Helper()
	e, err := coordsrv.New(coordsrv.Config{Dir: t.TempDir(), Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	if err := e.Start(t.Context()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(e.Close)
	return e.Admin()
}

// TestEtcdStoreRoundTrip: every table written through one EtcdStore is
// there, as written, in a store opened afresh on the same etcd.
func TestEtcdStoreRoundTrip(t *testing.T) {
	cli := testEtcd(t)
	s, err := OpenEtcdStore(t.Context(), EtcdStoreConfig{Client: cli})
	if err != nil {
		t.Fatal(err)
	}
	node := &NodeRecord{ID: ids.NewNodeID(), Address: "127.0.0.1:1", Total: sched.Resources{"CPU": 2}, Available: sched.Resources{"CPU": 1}, Alive: true, LastSeen: time.Unix(100, 0).UTC()}
	job := &JobRecord{ID: ids.JobIDFromUint32(7), Namespace: "ns", Entrypoint: "prog"}
	aid := ids.NewActorID(job.ID)
	actor := &pb.ActorInfo{Spec: &pb.ActorSpec{ActorId: aid[:], TypeName: "counter"}, State: pb.ActorState_ACTOR_STATE_ALIVE}
	pgid := ids.NewPlacementGroupID(job.ID)
	pg := &pb.PlacementGroupInfo{PlacementGroupId: pgid[:], Name: "pg"}
	file := &FileRecord{Hash: [32]byte{1, 2, 3}, Size: 42}
	for what, err := range map[string]error{
		"node": s.PutNode(node), "job": s.PutJob(job), "actor": s.PutActor(actor), "pg": s.PutPlacementGroup(pg),
		"next job": s.PutNextJob(8), "file": s.PutFileRecord(file), "name": s.PutFileName("a/b.txt", file.Hash),
	} {
		if err != nil {
			t.Fatalf("put %s: %v", what, err)
		}
	}
	r, err := OpenEtcdStore(t.Context(), EtcdStoreConfig{Client: cli})
	if err != nil {
		t.Fatal(err)
	}
	if n, ok := r.GetNode(node.ID); !ok || n.Address != node.Address || n.Total["CPU"] != 2 || !n.Alive {
		t.Errorf("node: got %+v (%t), want %+v", n, ok, node)
	}
	if j, ok := r.GetJob(job.ID); !ok || j.Namespace != "ns" || j.Entrypoint != "prog" {
		t.Errorf("job: got %+v (%t), want %+v", j, ok, job)
	}
	if a, ok := r.GetActor(aid); !ok || a.GetSpec().GetTypeName() != "counter" || a.GetState() != pb.ActorState_ACTOR_STATE_ALIVE {
		t.Errorf("actor: got %v (%t), want %v", a, ok, actor)
	}
	if pgs := r.ListPlacementGroups(); len(pgs) != 1 || pgs[0].GetName() != "pg" {
		t.Errorf("placement groups: got %v, want [%v]", pgs, pg)
	}
	if got := r.NextJob(); got != 8 {
		t.Errorf("next job: got %d, want 8", got)
	}
	files, names, err := r.LoadFiles()
	if err != nil || len(files) != 1 || files[0].Size != 42 || names["a/b.txt"] != file.Hash {
		t.Errorf("file index: got %v %v (%v), want the file and its name", files, names, err)
	}
	if err := s.DeleteFileName("a/b.txt"); err != nil {
		t.Fatal(err)
	}
	if err := s.DeleteFileRecord(file.Hash); err != nil {
		t.Fatal(err)
	}
	r2, err := OpenEtcdStore(t.Context(), EtcdStoreConfig{Client: cli})
	if err != nil {
		t.Fatal(err)
	}
	if files, names, _ := r2.LoadFiles(); len(files) != 0 || len(names) != 0 {
		t.Errorf("file index after the deletes: got %v %v, want empty", files, names)
	}
}

// TestEtcdStoreFence: once the fence's key is gone, a write fails with
// ErrFenced, Fenced() is closed, nothing is written, and every later write
// fails too.
func TestEtcdStoreFence(t *testing.T) {
	cli := testEtcd(t)
	put, err := cli.Put(t.Context(), "/fence", "term")
	if err != nil {
		t.Fatal(err)
	}
	fence := clientv3.Compare(clientv3.CreateRevision("/fence"), "=", put.Header.Revision)
	s, err := OpenEtcdStore(t.Context(), EtcdStoreConfig{Client: cli, Fence: &fence})
	if err != nil {
		t.Fatal(err)
	}
	job := &JobRecord{ID: ids.JobIDFromUint32(1)}
	if err := s.PutJob(job); err != nil {
		t.Fatalf("a write while the fence holds: %v", err)
	}
	if _, err := cli.Delete(t.Context(), "/fence"); err != nil {
		t.Fatal(err)
	}
	if err := s.PutJob(&JobRecord{ID: ids.JobIDFromUint32(2)}); !errors.Is(err, ErrFenced) {
		t.Fatalf("a write after the fence's key went: got %v, want ErrFenced", err)
	}
	select {
	case <-s.Fenced():
	default:
		t.Error("Fenced(): got open, want closed after a refused write")
	}
	if _, ok := s.GetJob(ids.JobIDFromUint32(2)); ok {
		t.Error("the refused job: got it in memory, want absent")
	}
	// Even a new key of the same name does not revive the old term.
	if _, err := cli.Put(t.Context(), "/fence", "another term"); err != nil {
		t.Fatal(err)
	}
	if err := s.PutNextJob(9); !errors.Is(err, ErrFenced) {
		t.Errorf("a write after the fence failed once: got %v, want ErrFenced", err)
	}
	r, err := OpenEtcdStore(t.Context(), EtcdStoreConfig{Client: cli})
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := r.GetJob(ids.JobIDFromUint32(2)); ok || r.NextJob() == 9 {
		t.Error("etcd after the refused writes: got them stored, want absent")
	}
	if _, ok := r.GetJob(job.ID); !ok {
		t.Error("the write made under the fence: got absent, want stored")
	}
}
