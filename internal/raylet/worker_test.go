package raylet

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"github.com/goray/goray/internal/rpc"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/goray/goray/internal/errs"
	"github.com/goray/goray/internal/ids"
	"github.com/goray/goray/internal/testwait"
	pb "github.com/goray/goray/proto/goray/v1"
)

// syncBuffer is a bytes.Buffer safe for concurrent use.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// buildTestWorker builds testdata/worker, a stand-in job binary.
func buildTestWorker(t *testing.T) []byte {
	t.Helper()
	if testing.Short() {
		t.Skip("builds a helper binary")
	}
	out := filepath.Join(t.TempDir(), "worker")
	cmd := exec.Command("go", "build", "-o", out, "./testdata/worker")
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build testdata/worker: %v\n%s", err, b)
	}
	bin, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	return bin
}

// registerJob registers a job with the head and uploads its binary.
func registerJob(t *testing.T, head *Raylet, bin []byte) ids.JobID {
	t.Helper()
	sched := rpc.NewHeadClient(dial(t, head.Address(), head.Token()))
	sum := sha256.Sum256(bin)
	ctx := callCtx(t)
	resp, err := sched.RegisterJob(ctx, &pb.RegisterJobRequest{BinarySha256: sum[:], BinarySize: uint64(len(bin)), Entrypoint: "testworker"})
	if err != nil {
		t.Fatalf("RegisterJob: %v", err)
	}
	if !resp.GetBinaryPresent() {
		up, err := sched.UploadJobBinary(ctx)
		if err != nil {
			t.Fatalf("UploadJobBinary: %v", err)
		}
		if err := up.Send(&pb.UploadJobBinaryRequest{BinarySha256: sum[:], Size: uint64(len(bin))}); err != nil {
			t.Fatal(err)
		}
		for off := 0; off < len(bin); off += 1 << 20 {
			if err := up.Send(&pb.UploadJobBinaryRequest{Chunk: bin[off:min(off+1<<20, len(bin))]}); err != nil {
				t.Fatal(err)
			}
		}
		if _, err := up.CloseAndRecv(); err != nil {
			t.Fatalf("UploadJobBinary: %v", err)
		}
	}
	id, err := ids.ParseJobID(resp.GetJobId())
	if err != nil {
		t.Fatal(err)
	}
	return id
}

func alive(pid int) bool { return syscall.Kill(pid, 0) == nil }

func TestWorkerProcesses(t *testing.T) {
	bin := buildTestWorker(t)
	var out syncBuffer
	head := startTestHead(t, Config{
		Resources: map[string]float64{"CPU": 2}, MaxWorkersPerJob: 2,
		TokenFile: filepath.Join(t.TempDir(), "token"), Logger: testLogger(t), Stderr: &out,
	}, headOpts{})
	job := registerJob(t, head, bin)
	client := nodeClient(t, head)

	lease := func() *pb.RequestWorkerLeaseResponse {
		t.Helper()
		resp, err := client.RequestWorkerLease(callCtx(t), &pb.RequestWorkerLeaseRequest{JobId: job[:]})
		if err != nil {
			t.Fatalf("RequestWorkerLease: %v", err)
		}
		if len(resp.GetLeaseId()) == 0 || resp.GetWorkerAddress() == "" || !bytes.Equal(resp.GetNodeId(), head.nodeID[:]) {
			t.Fatalf("RequestWorkerLease: got %v, want a granted lease on node %s", resp, head.NodeID())
		}
		return resp
	}

	first := lease()
	testwait.Eventually(t, 10*time.Second, "worker output lines prefixed (worker pid=N)", func() bool {
		return strings.Contains(out.String(), "(worker pid=") && strings.Contains(out.String(), ") test worker registered\n")
	})
	if _, err := client.ReturnWorkerLease(callCtx(t), &pb.ReturnWorkerLeaseRequest{LeaseId: first.GetLeaseId()}); err != nil {
		t.Fatalf("ReturnWorkerLease: %v", err)
	}
	again := lease()
	if !bytes.Equal(again.GetWorkerId(), first.GetWorkerId()) {
		t.Errorf("second lease: got worker %x, want the idle worker %x reused", again.GetWorkerId(), first.GetWorkerId())
	}
	if _, err := client.ReturnWorkerLease(callCtx(t), &pb.ReturnWorkerLeaseRequest{LeaseId: again.GetLeaseId()}); err != nil {
		t.Fatalf("ReturnWorkerLease: %v", err)
	}

	t.Run("lease waits for resources", func(t *testing.T) {
		give := func(l *pb.RequestWorkerLeaseResponse) {
			t.Helper()
			if _, err := client.ReturnWorkerLease(callCtx(t), &pb.ReturnWorkerLeaseRequest{LeaseId: l.GetLeaseId()}); err != nil {
				t.Fatalf("ReturnWorkerLease: %v", err)
			}
		}
		one, two := lease(), lease() // both CPUs, two workers
		if bytes.Equal(one.GetWorkerId(), two.GetWorkerId()) {
			t.Errorf("two concurrent leases got the same worker %x", one.GetWorkerId())
		}
		wctx, wcancel := context.WithTimeout(t.Context(), 300*time.Millisecond)
		defer wcancel()
		if _, err := client.RequestWorkerLease(wctx, &pb.RequestWorkerLeaseRequest{JobId: job[:]}); err == nil {
			t.Fatalf("third lease with no CPU left: got granted, want it to wait")
		}
		done := make(chan *pb.RequestWorkerLeaseResponse, 1)
		go func() {
			resp, _ := client.RequestWorkerLease(callCtx(t), &pb.RequestWorkerLeaseRequest{JobId: job[:]})
			done <- resp
		}()
		testwait.Eventually(t, 10*time.Second, "the third lease waiting for a CPU", func() bool {
			head.leases.mu.Lock()
			defer head.leases.mu.Unlock()
			return len(head.leases.waiters) == 1
		})
		give(two)
		third := <-done
		if len(third.GetLeaseId()) == 0 {
			t.Fatalf("queued lease: not granted after a lease was returned")
		}
		give(third)
		give(one)
	})

	t.Run("actors", func(t *testing.T) {
		spec := func(typ string) *pb.StartActorRequest {
			a := ids.NewActorID(job)
			return &pb.StartActorRequest{Spec: &pb.ActorSpec{ActorId: a[:], JobId: job[:], TypeName: typ}}
		}
		resp, err := client.StartActor(callCtx(t), spec("Counter"))
		if err != nil {
			t.Fatalf("CreateActor: %v", err)
		}
		if resp.GetWorkerAddress() == "" {
			t.Errorf("CreateActor: got no worker address")
		}
		_, err = client.StartActor(callCtx(t), spec("missing"))
		if err := errs.FromStatus(err); !errors.Is(err, errs.ErrNotFound) {
			t.Errorf("CreateActor of an unregistered type: got %v, want ErrNotFound", err)
		}
		req := spec("crash")
		req.Spec.Resources = &pb.Resources{Amounts: map[string]float64{"CPU": 1}}
		if _, err := client.StartActor(callCtx(t), req); err == nil {
			t.Errorf("CreateActor whose worker exits: got nil error")
		}
		// The crashed host's resources come back.
		testwait.Eventually(t, 10*time.Second, "2 CPUs available after the actor's worker died", func() bool {
			_, avail := head.leases.resources()
			return avail["CPU"] == 2
		})
	})

	t.Run("finish job kills its workers", func(t *testing.T) {
		head.pool.mu.Lock()
		var pids []int
		for _, w := range head.pool.workers {
			pids = append(pids, w.pid)
		}
		head.pool.mu.Unlock()
		if len(pids) == 0 {
			t.Fatal("no workers running before FinishJob")
		}
		if _, err := client.StopJob(callCtx(t), &pb.StopJobRequest{JobId: job[:]}); err != nil {
			t.Fatalf("FinishJob: %v", err)
		}
		for _, pid := range pids {
			if alive(pid) {
				t.Errorf("worker pid %d still alive after FinishJob", pid)
			}
		}
		_, err := client.RequestWorkerLease(callCtx(t), &pb.RequestWorkerLeaseRequest{JobId: job[:]})
		if err := errs.FromStatus(err); !errors.Is(err, errs.ErrJobFinished) {
			t.Errorf("lease for a finished job: got %v, want ErrJobFinished", err)
		}
	})
}
