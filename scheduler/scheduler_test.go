package scheduler

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"errors"
	"io"
	"log/slog"
	"net"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/goray/goray/internal/errs"
	"github.com/goray/goray/internal/ids"
	"github.com/goray/goray/internal/rpc"
	"github.com/goray/goray/internal/testwait"
	pb "github.com/goray/goray/proto/goray/v1"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

const testToken = "test-token"

// serve runs g on a fresh loopback listener until the test ends.
func serve(t *testing.T, g *grpc.Server) string {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = g.Serve(lis)
	}()
	t.Cleanup(func() {
		g.Stop()
		<-done
	})
	return lis.Addr().String()
}

type head struct {
	srv    *Server
	client *rpc.HeadClient
}

// startHead serves a Server with cfg (DataDir and Token filled in) on
// loopback and returns it with a client.
func startHead(t *testing.T, cfg Config) *head {
	t.Helper()
	if cfg.DataDir == "" {
		cfg.DataDir = t.TempDir()
	}
	cfg.Token = testToken
	cfg.Logger = slog.New(slog.DiscardHandler)
	srv, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	g := grpc.NewServer(rpc.ServerOptions(testToken)...)
	srv.Register(g)
	addr := serve(t, g)
	t.Cleanup(srv.Close) // runs before the grpc.Server stops
	cc, err := rpc.Dial(addr, testToken)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cc.Close() })
	return &head{srv: srv, client: rpc.NewHeadClient(cc)}
}

// fakeRaylet is a raylet's NodeService and BundleService that record what
// the head asks of them.
type fakeRaylet struct {
	pb.UnimplementedNodeServiceServer
	pb.UnimplementedBundleServiceServer
	id   ids.NodeID
	addr string

	mu       sync.Mutex
	created  []ids.ActorID
	killed   []ids.ActorID
	finished []ids.JobID
	// Placement group bundles (pg_test.go): "pg/index" → state.
	bundles     map[string]string
	failPrepare bool
}

func startRaylet(t *testing.T) *fakeRaylet {
	t.Helper()
	f := &fakeRaylet{id: ids.NewNodeID()}
	g := grpc.NewServer(rpc.ServerOptions(testToken)...)
	pb.RegisterNodeServiceServer(g, f)
	pb.RegisterBundleServiceServer(g, f)
	f.addr = serve(t, g)
	return f
}

func (f *fakeRaylet) StartActor(_ context.Context, req *pb.StartActorRequest) (*pb.StartActorResponse, error) {
	if req.GetSpec().GetTypeName() == "unregistered" {
		return nil, errs.Status(errs.New(errs.KindNotFound, "unregistered", "actor type is not registered in the job binary"))
	}
	aid, err := ids.ParseActorID(req.GetSpec().GetActorId())
	if err != nil {
		return nil, status.Error(codes.InvalidArgument, err.Error())
	}
	f.mu.Lock()
	f.created = append(f.created, aid)
	f.mu.Unlock()
	wid := ids.NewWorkerID()
	return &pb.StartActorResponse{WorkerId: wid[:], WorkerAddress: "worker@" + f.addr}, nil
}

func (f *fakeRaylet) StopActor(_ context.Context, req *pb.StopActorRequest) (*pb.StopActorResponse, error) {
	aid, err := ids.ParseActorID(req.GetActorId())
	if err != nil {
		return nil, status.Error(codes.InvalidArgument, err.Error())
	}
	f.mu.Lock()
	f.killed = append(f.killed, aid)
	f.mu.Unlock()
	return &pb.StopActorResponse{}, nil
}

func (f *fakeRaylet) StopJob(_ context.Context, req *pb.StopJobRequest) (*pb.StopJobResponse, error) {
	jid, err := ids.ParseJobID(req.GetJobId())
	if err != nil {
		return nil, status.Error(codes.InvalidArgument, err.Error())
	}
	f.mu.Lock()
	f.finished = append(f.finished, jid)
	f.mu.Unlock()
	return &pb.StopJobResponse{}, nil
}

func (f *fakeRaylet) wasKilled(a ids.ActorID) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Contains(f.killed, a)
}

func (f *fakeRaylet) wasFinished(j ids.JobID) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Contains(f.finished, j)
}

// register registers f with the head with the given total resources.
func (h *head) register(t *testing.T, f *fakeRaylet, total map[string]float64) {
	t.Helper()
	_, err := h.client.RegisterNode(t.Context(), &pb.RegisterNodeRequest{NodeId: f.id[:], Address: f.addr, Total: &pb.Resources{Amounts: total}})
	if err != nil {
		t.Fatalf("RegisterNode: %v", err)
	}
}

// job registers a job and returns its ID.
func (h *head) job(t *testing.T) ids.JobID {
	t.Helper()
	sum := sha256.Sum256([]byte("binary"))
	resp, err := h.client.RegisterJob(t.Context(), &pb.RegisterJobRequest{BinarySha256: sum[:], BinarySize: 6, Namespace: "ns", Entrypoint: "test"})
	if err != nil {
		t.Fatalf("RegisterJob: %v", err)
	}
	j, err := ids.ParseJobID(resp.GetJobId())
	if err != nil {
		t.Fatal(err)
	}
	return j
}

type actorOpts struct {
	typeName, name, namespace string
	placement, resources      map[string]float64
	failFast                  bool
	strategy                  *pb.SchedulingStrategy
}

func (h *head) createActor(t *testing.T, j ids.JobID, o actorOpts) (ids.ActorID, *pb.ActorInfo, error) {
	t.Helper()
	aid := ids.NewActorID(j)
	if o.typeName == "" {
		o.typeName = "counter"
	}
	spec := &pb.ActorSpec{ActorId: aid[:], JobId: j[:], TypeName: o.typeName, Name: o.name, Namespace: o.namespace,
		FailFast: o.failFast, SchedulingStrategy: o.strategy}
	if o.placement != nil {
		spec.PlacementResources = &pb.Resources{Amounts: o.placement}
	}
	if o.resources != nil {
		spec.Resources = &pb.Resources{Amounts: o.resources}
	}
	resp, err := h.client.CreateActor(t.Context(), &pb.CreateActorRequest{Spec: spec})
	return aid, resp.GetActor(), err
}

func wantCode(t *testing.T, err error, want codes.Code) {
	t.Helper()
	if got := status.Code(err); got != want {
		t.Fatalf("got code %v (err %v), want %v", got, err, want)
	}
}

func TestConfigValidate(t *testing.T) {
	tests := []struct {
		name    string
		cfg     Config
		wantErr bool
	}{
		{"defaults", Config{DataDir: "/tmp/x"}, false},
		{"no data dir", Config{}, true},
		{"timeout not above interval", Config{DataDir: "/tmp/x", HeartbeatInterval: time.Second, NodeTimeout: time.Second}, true},
		{"negative max binary", Config{DataDir: "/tmp/x", MaxBinarySize: -1}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.cfg.Validate()
			if got := err != nil; got != tt.wantErr {
				t.Fatalf("got error %v, want error: %v", err, tt.wantErr)
			}
			if err == nil && (tt.cfg.NodeTimeout != DefaultNodeTimeout || tt.cfg.HeartbeatInterval != DefaultHeartbeatInterval ||
				tt.cfg.MaxBinarySize != DefaultMaxBinarySize || tt.cfg.Logger == nil || tt.cfg.Store == nil) {
				t.Fatalf("got %+v, want defaults filled in", tt.cfg)
			}
		})
	}
}

func TestNodeRegistrationAndHeartbeat(t *testing.T) {
	h := startHead(t, Config{HeartbeatInterval: 50 * time.Millisecond, NodeTimeout: 300 * time.Millisecond})
	ctx := t.Context()
	a, b := startRaylet(t), startRaylet(t)

	resp, err := h.client.RegisterNode(ctx, &pb.RegisterNodeRequest{NodeId: a.id[:], Address: a.addr, Total: &pb.Resources{Amounts: map[string]float64{"CPU": 4}}})
	if err != nil {
		t.Fatal(err)
	}
	if got, want := resp.GetHeartbeatIntervalMs(), uint32(50); got != want {
		t.Fatalf("heartbeat interval: got %d ms, want %d ms", got, want)
	}
	h.register(t, b, map[string]float64{"CPU": 2})

	hb, err := h.client.Heartbeat(ctx, &pb.HeartbeatRequest{NodeId: a.id[:], Available: &pb.Resources{Amounts: map[string]float64{"CPU": 1.5}}})
	if err != nil {
		t.Fatal(err)
	}
	if hb.GetReregister() {
		t.Fatalf("got reregister=true for a known node, want false")
	}
	if got := len(hb.GetNodes()); got != 2 {
		t.Fatalf("heartbeat nodes: got %d, want 2", got)
	}
	for _, n := range hb.GetNodes() {
		if bytes.Equal(n.GetNodeId(), a.id[:]) {
			if got := n.GetAvailable().GetAmounts()["CPU"]; got != 1.5 {
				t.Fatalf("available CPU of node a: got %v, want 1.5", got)
			}
		}
	}

	t.Run("unknown node is told to reregister", func(t *testing.T) {
		other := ids.NewNodeID()
		hb, err := h.client.Heartbeat(ctx, &pb.HeartbeatRequest{NodeId: other[:]})
		if err != nil {
			t.Fatal(err)
		}
		if !hb.GetReregister() {
			t.Fatalf("got reregister=false, want true")
		}
	})

	t.Run("malformed requests", func(t *testing.T) {
		tests := []struct {
			name string
			req  *pb.RegisterNodeRequest
		}{
			{"short node id", &pb.RegisterNodeRequest{NodeId: []byte{1, 2}, Address: "x:1"}},
			{"no address", &pb.RegisterNodeRequest{NodeId: a.id[:]}},
			{"negative resource", &pb.RegisterNodeRequest{NodeId: a.id[:], Address: a.addr, Total: &pb.Resources{Amounts: map[string]float64{"CPU": -1}}}},
		}
		for _, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				_, err := h.client.RegisterNode(ctx, tt.req)
				wantCode(t, err, codes.InvalidArgument)
				if !errors.Is(errs.FromStatus(err), errs.ErrInvalidArgument) {
					t.Fatalf("got %v, want an errs invalid argument", errs.FromStatus(err))
				}
			})
		}
	})

	t.Run("silent node dies with its actors", func(t *testing.T) {
		j := h.job(t)
		// Node b is the least loaded feasible node for a "b-only" resource.
		h.register(t, b, map[string]float64{"CPU": 2, "only-b": 1})
		aid, info, err := h.createActor(t, j, actorOpts{placement: map[string]float64{"only-b": 1}})
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(info.GetNodeId(), b.id[:]) {
			t.Fatalf("actor placed on %x, want node b %s", info.GetNodeId(), b.id)
		}
		// Keep a alive, let b go silent.
		stop := make(chan struct{})
		var wg sync.WaitGroup
		wg.Go(func() {
			tick := time.NewTicker(50 * time.Millisecond)
			defer tick.Stop()
			for {
				select {
				case <-stop:
					return
				case <-tick.C:
					_, _ = h.client.Heartbeat(ctx, &pb.HeartbeatRequest{NodeId: a.id[:]})
				}
			}
		})
		defer func() { close(stop); wg.Wait() }()

		alive := func(id ids.NodeID) bool {
			resp, err := h.client.ListNodes(ctx, &pb.ListNodesRequest{})
			if err != nil {
				t.Fatal(err)
			}
			for _, n := range resp.GetNodes() {
				if bytes.Equal(n.GetNodeId(), id[:]) {
					return n.GetAlive()
				}
			}
			t.Fatalf("node %s missing from ListNodes", id)
			return false
		}
		testwait.Eventually(t, 5*time.Second, "node b to be declared dead", func() bool { return !alive(b.id) })
		if !alive(a.id) {
			t.Fatalf("node a: got alive=false, want true (it heartbeats)")
		}
		got, err := h.client.GetActor(ctx, &pb.GetActorRequest{ActorId: aid[:]})
		if err != nil {
			t.Fatal(err)
		}
		if st := got.GetActor().GetState(); st != pb.ActorState_ACTOR_STATE_DEAD {
			t.Fatalf("actor state: got %v, want DEAD", st)
		}
		if !errors.Is(errs.FromProto(got.GetActor().GetDeathCause()), errs.ErrNodeDied) {
			t.Fatalf("death cause: got %v, want a node-died error", errs.FromProto(got.GetActor().GetDeathCause()))
		}
		hb, err := h.client.Heartbeat(ctx, &pb.HeartbeatRequest{NodeId: b.id[:]})
		if err != nil {
			t.Fatal(err)
		}
		if !hb.GetReregister() {
			t.Fatalf("heartbeat of a dead node: got reregister=false, want true")
		}
		// A dead incarnation stays dead: its raylet joins under a new ID
		// (TestDeadNodeMustRejoinAsNewNode).
		_, err = h.client.RegisterNode(ctx, &pb.RegisterNodeRequest{NodeId: b.id[:], Address: b.addr, Total: &pb.Resources{Amounts: map[string]float64{"CPU": 2}}})
		if !errors.Is(errs.FromStatus(err), errs.ErrNodeDied) {
			t.Fatalf("RegisterNode of dead node b: got %v, want a node-died error", err)
		}
	})
}

func TestJobBinary(t *testing.T) {
	h := startHead(t, Config{MaxBinarySize: 8 << 20})
	ctx := t.Context()
	data := make([]byte, 2<<20+12345) // more than two fetch chunks
	_, _ = rand.Read(data)
	sum := sha256.Sum256(data)

	upload := func(sha []byte, size uint64, data []byte) error {
		st, err := h.client.UploadJobBinary(ctx)
		if err != nil {
			return err
		}
		if err := st.Send(&pb.UploadJobBinaryRequest{BinarySha256: sha, Size: size}); err != nil {
			return err
		}
		for chunk := range slices.Chunk(data, 300_000) {
			if err := st.Send(&pb.UploadJobBinaryRequest{Chunk: chunk}); err != nil {
				break // the error comes from CloseAndRecv
			}
		}
		_, err = st.CloseAndRecv()
		return err
	}
	fetch := func(sha []byte) ([]byte, uint64, error) {
		st, err := h.client.FetchJobBinary(ctx, &pb.FetchJobBinaryRequest{BinarySha256: sha})
		if err != nil {
			return nil, 0, err
		}
		var buf []byte
		var size uint64
		for first := true; ; first = false {
			msg, err := st.Recv()
			if errors.Is(err, io.EOF) {
				return buf, size, nil
			}
			if err != nil {
				return nil, 0, err
			}
			if first {
				size = msg.GetSize()
			}
			buf = append(buf, msg.GetChunk()...)
		}
	}

	for i, want := range []uint32{1, 2} {
		resp, err := h.client.RegisterJob(ctx, &pb.RegisterJobRequest{BinarySha256: sum[:], BinarySize: uint64(len(data)), DriverAddress: "driver:1", Namespace: "ns", Entrypoint: "prog"})
		if err != nil {
			t.Fatal(err)
		}
		j, err := ids.ParseJobID(resp.GetJobId())
		if err != nil {
			t.Fatal(err)
		}
		if got := j.Uint32(); got != want {
			t.Fatalf("job %d: got ID %d, want %d", i, got, want)
		}
		if resp.GetBinaryPresent() {
			t.Fatalf("binary_present: got true before upload, want false")
		}
	}

	t.Run("rejected uploads", func(t *testing.T) {
		wrong := sha256.Sum256([]byte("something else"))
		tests := []struct {
			name    string
			sha     []byte
			size    uint64
			data    []byte
			wantMsg string
		}{
			{"bad hash", wrong[:], uint64(len(data)), data, "SHA-256 mismatch"},
			{"short", sum[:], uint64(len(data)), data[:100], "received 100 bytes"},
			{"too long", sum[:], 100, data, "more than the declared"},
			{"over the limit", sum[:], 9 << 20, nil, "exceeds the head's limit"},
			{"malformed hash", sum[:5], uint64(len(data)), data, "malformed binary SHA-256"},
		}
		for _, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				err := upload(tt.sha, tt.size, tt.data)
				wantCode(t, err, codes.InvalidArgument)
				if !strings.Contains(err.Error(), tt.wantMsg) {
					t.Fatalf("got %q, want it to contain %q", err, tt.wantMsg)
				}
			})
		}
		if _, _, err := fetch(sum[:]); status.Code(err) != codes.NotFound {
			t.Fatalf("fetch after rejected uploads: got %v, want NotFound", err)
		}
	})

	t.Run("concurrent uploads and fetch", func(t *testing.T) {
		var wg sync.WaitGroup
		errc := make(chan error, 4)
		for range 4 {
			wg.Go(func() { errc <- upload(sum[:], uint64(len(data)), data) })
		}
		wg.Wait()
		close(errc)
		for err := range errc {
			if err != nil {
				t.Fatalf("upload: got %v, want success", err)
			}
		}
		got, size, err := fetch(sum[:])
		if err != nil {
			t.Fatal(err)
		}
		if size != uint64(len(data)) {
			t.Fatalf("fetched size: got %d, want %d", size, len(data))
		}
		if !bytes.Equal(got, data) {
			t.Fatalf("fetched %d bytes that differ from the %d uploaded", len(got), len(data))
		}
		resp, err := h.client.RegisterJob(ctx, &pb.RegisterJobRequest{BinarySha256: sum[:]})
		if err != nil {
			t.Fatal(err)
		}
		if !resp.GetBinaryPresent() {
			t.Fatalf("binary_present: got false after upload, want true")
		}
	})

	t.Run("lookups", func(t *testing.T) {
		unknown := sha256.Sum256([]byte("unknown"))
		_, _, err := fetch(unknown[:])
		wantCode(t, err, codes.NotFound)

		j1 := ids.JobIDFromUint32(1)
		resp, err := h.client.GetJob(ctx, &pb.GetJobRequest{JobId: j1[:]})
		if err != nil {
			t.Fatal(err)
		}
		job := resp.GetJob()
		if !bytes.Equal(job.GetBinarySha256(), sum[:]) || job.GetDriverAddress() != "driver:1" || job.GetNamespace() != "ns" || job.GetEntrypoint() != "prog" || job.GetFinished() {
			t.Fatalf("GetJob: got %v, want the registered fields, unfinished", job)
		}
		j99 := ids.JobIDFromUint32(99)
		_, err = h.client.GetJob(ctx, &pb.GetJobRequest{JobId: j99[:]})
		if !errors.Is(errs.FromStatus(err), errs.ErrNotFound) {
			t.Fatalf("GetJob of unknown job: got %v, want not found", err)
		}
	})
}

func TestKeepJobAlive(t *testing.T) {
	h := startHead(t, Config{})
	ctx := t.Context()
	r := startRaylet(t)
	h.register(t, r, map[string]float64{"CPU": 4})
	j := h.job(t)
	aid, _, err := h.createActor(t, j, actorOpts{name: "a"})
	if err != nil {
		t.Fatal(err)
	}

	sctx, cancel := context.WithCancel(ctx)
	st, err := h.client.KeepJobAlive(sctx, &pb.KeepJobAliveRequest{JobId: j[:]})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := st.Header(); err != nil { // the head is watching
		t.Fatal(err)
	}
	cancel() // the driver goes away

	testwait.Eventually(t, 5*time.Second, "the raylet to receive FinishJob", func() bool { return r.wasFinished(j) })
	resp, err := h.client.GetJob(ctx, &pb.GetJobRequest{JobId: j[:]})
	if err != nil {
		t.Fatal(err)
	}
	if !resp.GetJob().GetFinished() {
		t.Fatalf("job finished: got false, want true")
	}
	got, err := h.client.GetActor(ctx, &pb.GetActorRequest{ActorId: aid[:]})
	if err != nil {
		t.Fatal(err)
	}
	if st := got.GetActor().GetState(); st != pb.ActorState_ACTOR_STATE_DEAD {
		t.Fatalf("actor of finished job: got %v, want DEAD", st)
	}
	hb, err := h.client.Heartbeat(ctx, &pb.HeartbeatRequest{NodeId: r.id[:]})
	if err != nil {
		t.Fatal(err)
	}
	if !slices.ContainsFunc(hb.GetFinishedJobIds(), func(b []byte) bool { return bytes.Equal(b, j[:]) }) {
		t.Fatalf("heartbeat finished jobs: got %x, want it to list %s", hb.GetFinishedJobIds(), j)
	}

	t.Run("finished job", func(t *testing.T) {
		if _, err := h.client.FinishJob(ctx, &pb.FinishJobRequest{JobId: j[:]}); err != nil {
			t.Fatalf("FinishJob again: got %v, want success", err)
		}
		_, _, err := h.createActor(t, j, actorOpts{})
		wantCode(t, err, codes.FailedPrecondition)
		st, err := h.client.KeepJobAlive(ctx, &pb.KeepJobAliveRequest{JobId: j[:]})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := st.Recv(); !errors.Is(err, io.EOF) {
			t.Fatalf("KeepJobAlive of a finished job: got %v, want io.EOF", err)
		}
	})

	t.Run("FinishJob ends KeepJobAlive", func(t *testing.T) {
		j2 := h.job(t)
		st, err := h.client.KeepJobAlive(ctx, &pb.KeepJobAliveRequest{JobId: j2[:]})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := st.Header(); err != nil {
			t.Fatal(err)
		}
		if _, err := h.client.FinishJob(ctx, &pb.FinishJobRequest{JobId: j2[:]}); err != nil {
			t.Fatal(err)
		}
		if !r.wasFinished(j2) {
			t.Fatalf("raylet FinishJob for %s: got none, want one before FinishJob returns", j2)
		}
		if _, err := st.Recv(); !errors.Is(err, io.EOF) {
			t.Fatalf("KeepJobAlive after FinishJob: got %v, want io.EOF", err)
		}
	})

	t.Run("unknown job", func(t *testing.T) {
		j99 := ids.JobIDFromUint32(99)
		st, err := h.client.KeepJobAlive(ctx, &pb.KeepJobAliveRequest{JobId: j99[:]})
		if err == nil {
			_, err = st.Recv()
		}
		wantCode(t, err, codes.NotFound)
		_, err = h.client.FinishJob(ctx, &pb.FinishJobRequest{JobId: j99[:]})
		wantCode(t, err, codes.NotFound)
	})
}

func TestCreateActorPlacement(t *testing.T) {
	h := startHead(t, Config{})
	a, b := startRaylet(t), startRaylet(t)
	h.register(t, a, map[string]float64{"CPU": 4})
	h.register(t, b, map[string]float64{"CPU": 2, "gpu": 2})
	j := h.job(t)

	// Each placement counts toward the next: table order matters.
	tests := []struct {
		name      string
		placement map[string]float64
		resources map[string]float64
		want      *fakeRaylet
	}{
		{"custom resource", map[string]float64{"gpu": 1}, nil, b},
		{"least loaded", map[string]float64{"CPU": 1}, nil, a},
		{"tie broken by available CPU", map[string]float64{"CPU": 1}, nil, a},
		{"resources only", nil, map[string]float64{"gpu": 2}, b},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			aid, info, err := h.createActor(t, j, actorOpts{placement: tt.placement, resources: tt.resources})
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(info.GetNodeId(), tt.want.id[:]) {
				t.Fatalf("placed on %x, want %s", info.GetNodeId(), tt.want.id)
			}
			if info.GetState() != pb.ActorState_ACTOR_STATE_ALIVE || info.GetWorkerAddress() != "worker@"+tt.want.addr || len(info.GetWorkerId()) != ids.WorkerIDSize {
				t.Fatalf("got %v, want ALIVE with the raylet's worker", info)
			}
			tt.want.mu.Lock()
			created := slices.Contains(tt.want.created, aid)
			tt.want.mu.Unlock()
			if !created {
				t.Fatalf("raylet CreateActor: got no call for %s, want one", aid)
			}
		})
	}

	t.Run("infeasible", func(t *testing.T) {
		tests := []struct {
			name      string
			placement map[string]float64
			wantMsg   string
		}{
			{"too much of a resource", map[string]float64{"CPU": 1, "gpu": 3}, `actor type "counter" needs {"CPU":1,"gpu":3}; no node has resource "gpu" ≥ 3`},
			{"unknown resource", map[string]float64{"tpu": 1}, `no node has resource "tpu" ≥ 1`},
			{"no single node", map[string]float64{"CPU": 3, "gpu": 1}, "no single node has all of them"},
		}
		for _, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				_, _, err := h.createActor(t, j, actorOpts{placement: tt.placement, failFast: true})
				if !errors.Is(errs.FromStatus(err), errs.ErrInfeasible) {
					t.Fatalf("got %v, want an infeasible error", err)
				}
				if !strings.Contains(err.Error(), tt.wantMsg) {
					t.Fatalf("got %q, want it to contain %q", err, tt.wantMsg)
				}
			})
		}
	})

	t.Run("raylet error keeps its kind", func(t *testing.T) {
		aid, _, err := h.createActor(t, j, actorOpts{typeName: "unregistered"})
		if !errors.Is(errs.FromStatus(err), errs.ErrNotFound) {
			t.Fatalf("got %v, want the raylet's not-found error", err)
		}
		got, err := h.client.GetActor(t.Context(), &pb.GetActorRequest{ActorId: aid[:]})
		if err != nil {
			t.Fatal(err)
		}
		if st := got.GetActor().GetState(); st != pb.ActorState_ACTOR_STATE_DEAD {
			t.Fatalf("actor that failed to start: got %v, want DEAD", st)
		}
	})

	t.Run("invalid specs", func(t *testing.T) {
		j99 := ids.JobIDFromUint32(99)
		tests := []struct {
			name string
			spec *pb.ActorSpec
			want codes.Code
		}{
			{"no spec", nil, codes.InvalidArgument},
			{"malformed id", &pb.ActorSpec{ActorId: []byte{1}, TypeName: "t"}, codes.InvalidArgument},
			{"no type", &pb.ActorSpec{ActorId: func() []byte { a := ids.NewActorID(j); return a[:] }()}, codes.InvalidArgument},
			{"unknown job", &pb.ActorSpec{ActorId: func() []byte { a := ids.NewActorID(j99); return a[:] }(), TypeName: "t"}, codes.NotFound},
		}
		for _, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				_, err := h.client.CreateActor(t.Context(), &pb.CreateActorRequest{Spec: tt.spec})
				wantCode(t, err, tt.want)
			})
		}
	})
}

func TestNamedActorsAndKill(t *testing.T) {
	h := startHead(t, Config{})
	ctx := t.Context()
	r := startRaylet(t)
	h.register(t, r, map[string]float64{"CPU": 8})
	j := h.job(t)

	first, _, err := h.createActor(t, j, actorOpts{name: "counter", namespace: "ns1"})
	if err != nil {
		t.Fatal(err)
	}
	t.Run("duplicate name", func(t *testing.T) {
		_, _, err := h.createActor(t, j, actorOpts{name: "counter", namespace: "ns1"})
		wantCode(t, err, codes.AlreadyExists)
		for _, want := range []string{`"counter"`, `"ns1"`} {
			if !strings.Contains(err.Error(), want) {
				t.Fatalf("got %q, want it to name %s", err, want)
			}
		}
	})
	if _, _, err := h.createActor(t, j, actorOpts{name: "counter", namespace: "ns2"}); err != nil {
		t.Fatalf("same name in another namespace: got %v, want success", err)
	}

	t.Run("lookups", func(t *testing.T) {
		tests := []struct {
			name string
			req  *pb.GetActorRequest
			want codes.Code
		}{
			{"by id", &pb.GetActorRequest{ActorId: first[:]}, codes.OK},
			{"by name", &pb.GetActorRequest{Name: "counter", Namespace: "ns1"}, codes.OK},
			{"unknown name", &pb.GetActorRequest{Name: "nobody", Namespace: "ns1"}, codes.NotFound},
			{"name in the wrong namespace", &pb.GetActorRequest{Name: "counter", Namespace: "ns3"}, codes.NotFound},
			{"unknown id", &pb.GetActorRequest{ActorId: func() []byte { a := ids.NewActorID(j); return a[:] }()}, codes.NotFound},
			{"nothing", &pb.GetActorRequest{}, codes.InvalidArgument},
		}
		for _, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				resp, err := h.client.GetActor(ctx, tt.req)
				wantCode(t, err, tt.want)
				if tt.want == codes.NotFound && !errors.Is(errs.FromStatus(err), errs.ErrNotFound) {
					t.Fatalf("got %v, want an errs not-found error", errs.FromStatus(err))
				}
				if tt.want == codes.OK && !bytes.Equal(resp.GetActor().GetSpec().GetActorId(), first[:]) {
					t.Fatalf("got actor %x, want %s", resp.GetActor().GetSpec().GetActorId(), first)
				}
			})
		}
	})

	t.Run("kill", func(t *testing.T) {
		if _, err := h.client.KillActor(ctx, &pb.KillActorRequest{ActorId: first[:]}); err != nil {
			t.Fatal(err)
		}
		if !r.wasKilled(first) {
			t.Fatalf("raylet KillActor: got no call for %s, want one", first)
		}
		resp, err := h.client.GetActor(ctx, &pb.GetActorRequest{ActorId: first[:]})
		if err != nil {
			t.Fatal(err)
		}
		cause := errs.FromProto(resp.GetActor().GetDeathCause())
		if resp.GetActor().GetState() != pb.ActorState_ACTOR_STATE_DEAD || !errors.Is(cause, errs.ErrActorDied) {
			t.Fatalf("killed actor: got state %v cause %v, want DEAD, actor died", resp.GetActor().GetState(), cause)
		}
		if _, err := h.client.KillActor(ctx, &pb.KillActorRequest{ActorId: first[:]}); err != nil {
			t.Fatalf("second kill: got %v, want success", err)
		}
		_, err = h.client.GetActor(ctx, &pb.GetActorRequest{Name: "counter", Namespace: "ns1"})
		wantCode(t, err, codes.NotFound)
		if _, _, err := h.createActor(t, j, actorOpts{name: "counter", namespace: "ns1"}); err != nil {
			t.Fatalf("reusing a dead actor's name: got %v, want success", err)
		}
		unknown := ids.NewActorID(j)
		_, err = h.client.KillActor(ctx, &pb.KillActorRequest{ActorId: unknown[:]})
		if !errors.Is(errs.FromStatus(err), errs.ErrNotFound) {
			t.Fatalf("kill unknown actor: got %v, want not found", err)
		}
	})

	t.Run("worker death", func(t *testing.T) {
		tests := []struct {
			name     string
			byList   bool
			cause    *pb.ErrorInfo
			wantKind error
		}{
			{"by worker id, no cause", false, nil, errs.ErrWorkerCrashed},
			{"listed, with cause", true, errs.New(errs.KindOwnerDied, "", "owner gone").Proto(), errs.ErrOwnerDied},
		}
		for _, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				aid, info, err := h.createActor(t, j, actorOpts{})
				if err != nil {
					t.Fatal(err)
				}
				req := &pb.ReportWorkerDeathRequest{NodeId: r.id[:], WorkerId: info.GetWorkerId(), Cause: tt.cause}
				if tt.byList {
					// Listed by the raylet; a report names the worker the
					// actor ran on (a report about another worker is stale:
					// the actor may have been restarted since).
					req.ActorIds = [][]byte{aid[:]}
				}
				if _, err := h.client.ReportWorkerDeath(ctx, req); err != nil {
					t.Fatal(err)
				}
				resp, err := h.client.GetActor(ctx, &pb.GetActorRequest{ActorId: aid[:]})
				if err != nil {
					t.Fatal(err)
				}
				cause := errs.FromProto(resp.GetActor().GetDeathCause())
				if resp.GetActor().GetState() != pb.ActorState_ACTOR_STATE_DEAD || !errors.Is(cause, tt.wantKind) {
					t.Fatalf("got state %v cause %v, want DEAD with %v", resp.GetActor().GetState(), cause, tt.wantKind)
				}
			})
		}
	})
}

func TestCloseEndsStreamsWithoutFinishingJobs(t *testing.T) {
	h := startHead(t, Config{})
	r := startRaylet(t)
	h.register(t, r, map[string]float64{"CPU": 1})
	j := h.job(t)
	st, err := h.client.KeepJobAlive(t.Context(), &pb.KeepJobAliveRequest{JobId: j[:]})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := st.Header(); err != nil {
		t.Fatal(err)
	}
	h.srv.Close()
	_, err = st.Recv()
	wantCode(t, err, codes.Unavailable)
	h.srv.Close() // idempotent
	resp, err := h.client.GetJob(t.Context(), &pb.GetJobRequest{JobId: j[:]})
	if err != nil {
		t.Fatal(err)
	}
	if resp.GetJob().GetFinished() || r.wasFinished(j) {
		t.Fatalf("job after head Close: got finished, want still running")
	}
}
