package scheduler

import (
	"context"
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/goray/goray/internal/errs"
	"github.com/goray/goray/internal/ids"
	pb "github.com/goray/goray/proto/goray/v1"

	"github.com/goray/goray/internal/testwait"
)

type actorFixture struct {
	env     managerEnv
	nodes   *fakeNodes
	jobs    *fakeJobs
	raylets *fakeRaylets
	m       *actorManager
	job     ids.JobID
}

func newActorFixture(t *testing.T) *actorFixture {
	t.Helper()
	env := newManagerEnv(t)
	f := &actorFixture{env: env, nodes: newFakeNodes(env.feed), jobs: &fakeJobs{}, raylets: newFakeRaylets(), job: ids.JobIDFromUint32(7)}
	f.m = newActorManager(env.ctx, env.wg, env.log, &syncStore{s: NewMemoryStore()}, env.feed, f.nodes, f.jobs, f.raylets)
	f.m.restartBackoff = func(int) time.Duration { return 0 }
	return f
}

func (f *actorFixture) spec(mod func(*pb.ActorSpec)) *pb.ActorSpec {
	aid := ids.NewActorID(f.job)
	s := &pb.ActorSpec{ActorId: aid[:], JobId: f.job[:], TypeName: "counter",
		Resources: &pb.Resources{Amounts: map[string]float64{"CPU": 1}}}
	if mod != nil {
		mod(s)
	}
	return s
}

func (f *actorFixture) create(t *testing.T, ctx context.Context, spec *pb.ActorSpec) (*pb.ActorInfo, error) {
	t.Helper()
	resp, err := f.m.create(ctx, &pb.CreateActorRequest{Spec: spec})
	return resp.GetActor(), err
}

func (f *actorFixture) actor(t *testing.T, spec *pb.ActorSpec) *pb.ActorInfo {
	t.Helper()
	resp, err := f.m.get(t.Context(), &pb.GetActorRequest{ActorId: spec.GetActorId()})
	if err != nil {
		t.Fatalf("get actor: %v", err)
	}
	return resp.GetActor()
}

func TestActorManagerPlacesOnFittingNodeAndCharges(t *testing.T) {
	f := newActorFixture(t)
	small := f.nodes.add("small", map[string]float64{"CPU": 1})
	big := f.nodes.add("big", map[string]float64{"CPU": 8})
	spec := f.spec(func(s *pb.ActorSpec) { s.Resources.Amounts["CPU"] = 4 })
	a, err := f.create(t, t.Context(), spec)
	if err != nil {
		t.Fatalf("create: %v", err)
	}
	if got, want := string(a.GetNodeId()), string(big[:]); got != want {
		t.Fatalf("placed on node %x, want the only node that fits (%x; not %x)", got, want, small[:])
	}
	if a.GetState() != pb.ActorState_ACTOR_STATE_ALIVE || a.GetWorkerAddress() != "worker@big" {
		t.Fatalf("got state %v at %q, want ALIVE at worker@big", a.GetState(), a.GetWorkerAddress())
	}
	if got := f.nodes.charged[big]["CPU"]; got != 4 {
		t.Fatalf("charged %v CPU on the node, want 4", got)
	}
	if got := f.raylets.createdOn("big"); got != 1 {
		t.Fatalf("got %d CreateActor calls to big, want 1", got)
	}
}

func TestActorManagerWaitsForAFittingNode(t *testing.T) {
	f := newActorFixture(t)
	f.nodes.add("small", map[string]float64{"CPU": 1})
	spec := f.spec(func(s *pb.ActorSpec) { s.Resources.Amounts["CPU"] = 4 })

	t.Run("fail fast", func(t *testing.T) {
		ff := f.spec(func(s *pb.ActorSpec) { s.Resources.Amounts["CPU"] = 4; s.FailFast = true })
		_, err := f.create(t, t.Context(), ff)
		if !errors.Is(err, errs.ErrInfeasible) {
			t.Fatalf("got %v, want an infeasible error", err)
		}
	})

	type result struct {
		a   *pb.ActorInfo
		err error
	}
	done := make(chan result, 1)
	go func() {
		a, err := f.create(t, t.Context(), spec)
		done <- result{a, err}
	}()
	testwait.Eventually(t, 10*time.Second, "the actor to be listed as waiting", func() bool { return len(f.m.waitingInfeasible()) == 1 })
	if got := f.m.waitingInfeasible()[0]; got.GetKind() != "actor" || !strings.Contains(got.GetReason(), "CPU") {
		t.Fatalf("got waiting request %v, want an actor lacking CPU", got)
	}
	f.nodes.add("big", map[string]float64{"CPU": 8})
	r := <-done
	if r.err != nil {
		t.Fatalf("create after a fitting node joined: %v", r.err)
	}
	if len(f.m.waitingInfeasible()) != 0 {
		t.Fatalf("got %d waiting requests after placement, want 0", len(f.m.waitingInfeasible()))
	}
}

func TestActorManagerRefusesFinishedJobAndDuplicateName(t *testing.T) {
	f := newActorFixture(t)
	f.nodes.add("n1", map[string]float64{"CPU": 4})
	named := func(s *pb.ActorSpec) { s.Name, s.Namespace = "box", "ns" }
	if _, err := f.create(t, t.Context(), f.spec(named)); err != nil {
		t.Fatalf("first named actor: %v", err)
	}
	if _, err := f.create(t, t.Context(), f.spec(named)); !errors.Is(err, errs.ErrAlreadyExists) {
		t.Fatalf("second actor with the name: got %v, want already exists", err)
	}
	f.jobs.finish(f.job)
	if _, err := f.create(t, t.Context(), f.spec(nil)); !errors.Is(err, errs.ErrJobFinished) {
		t.Fatalf("actor of a finished job: got %v, want job finished", err)
	}
}

func TestActorManagerRestartsAfterNodeDeath(t *testing.T) {
	f := newActorFixture(t)
	n1 := f.nodes.add("n1", map[string]float64{"CPU": 4})
	spec := f.spec(func(s *pb.ActorSpec) { s.MaxRestarts = 1 })
	if _, err := f.create(t, t.Context(), spec); err != nil {
		t.Fatal(err)
	}
	f.nodes.kill(n1)
	n2 := f.nodes.add("n2", map[string]float64{"CPU": 4})
	if lost := f.m.nodeDied(n1, "n1", "test"); lost != 1 {
		t.Fatalf("nodeDied lost %d actors, want 1", lost)
	}
	testwait.Eventually(t, 10*time.Second, "the restart on n2", func() bool { return f.actor(t, spec).GetState() == pb.ActorState_ACTOR_STATE_ALIVE })
	a := f.actor(t, spec)
	if string(a.GetNodeId()) != string(n2[:]) || a.GetNumRestarts() != 1 {
		t.Fatalf("got node %x incarnation %d, want n2 incarnation 1", a.GetNodeId(), a.GetNumRestarts())
	}
	if got := f.raylets.incarnations; !slices.Equal(got, []uint32{0, 1}) {
		t.Fatalf("got incarnations %v asked of raylets, want [0 1]", got)
	}

	// Out of restarts: the next death is final, and says why.
	f.nodes.kill(n2)
	f.m.nodeDied(n2, "n2", "test")
	a = f.actor(t, spec)
	if a.GetState() != pb.ActorState_ACTOR_STATE_DEAD || !strings.Contains(a.GetDeathCause().GetMessage(), "max_restarts 1") {
		t.Fatalf("got %v (%v), want DEAD naming max_restarts 1", a.GetState(), a.GetDeathCause().GetMessage())
	}
}

func TestActorManagerRestartRetriesFailedStarts(t *testing.T) {
	f := newActorFixture(t)
	f.nodes.add("n1", map[string]float64{"CPU": 4})
	spec := f.spec(func(s *pb.ActorSpec) { s.MaxRestarts = -1 })
	a, err := f.create(t, t.Context(), spec)
	if err != nil {
		t.Fatal(err)
	}
	f.raylets.mu.Lock()
	f.raylets.failCreate = 2
	f.raylets.mu.Unlock()
	if _, err := f.m.workerDied(&pb.ReportWorkerDeathRequest{WorkerId: a.GetWorkerId(), NodeId: a.GetNodeId()}); err != nil {
		t.Fatal(err)
	}
	testwait.Eventually(t, 10*time.Second, "the restart", func() bool { return f.actor(t, spec).GetState() == pb.ActorState_ACTOR_STATE_ALIVE })
	if got := f.raylets.createdOn("n1"); got != 2 {
		t.Fatalf("got %d successful starts, want 2 (creation and the restart after two failures)", got)
	}

	// Every start failing: the restart gives up and the actor is dead.
	f.raylets.mu.Lock()
	f.raylets.failCreate = -1
	f.raylets.mu.Unlock()
	a = f.actor(t, spec)
	if _, err := f.m.workerDied(&pb.ReportWorkerDeathRequest{WorkerId: a.GetWorkerId()}); err != nil {
		t.Fatal(err)
	}
	testwait.Eventually(t, 10*time.Second, "the restart to give up", func() bool { return f.actor(t, spec).GetState() == pb.ActorState_ACTOR_STATE_DEAD })
	if msg := f.actor(t, spec).GetDeathCause().GetMessage(); !strings.Contains(msg, "could not be restarted") {
		t.Fatalf("got death cause %q, want it to say the actor could not be restarted", msg)
	}
}

func TestActorManagerJobLifetime(t *testing.T) {
	f := newActorFixture(t)
	addr := "n1"
	f.nodes.add(addr, map[string]float64{"CPU": 8})
	plain := f.spec(nil)
	detached := f.spec(func(s *pb.ActorSpec) { s.Detached = true })
	for _, s := range []*pb.ActorSpec{plain, detached} {
		if _, err := f.create(t, t.Context(), s); err != nil {
			t.Fatal(err)
		}
	}
	// The driver went: detached actors live on, the others stop.
	if n := f.m.driverGone(f.job, "its driver went away"); n != 1 {
		t.Fatalf("driverGone reported %d live detached actors, want 1", n)
	}
	if st := f.actor(t, plain).GetState(); st != pb.ActorState_ACTOR_STATE_DEAD {
		t.Fatalf("non-detached actor is %v, want DEAD", st)
	}
	plainID, _ := ids.ParseActorID(plain.GetActorId())
	testwait.Eventually(t, 10*time.Second, "the raylet to be told to stop the actor", func() bool { return slices.Contains(f.raylets.killedOn(addr), plainID) })
	if st := f.actor(t, detached).GetState(); st != pb.ActorState_ACTOR_STATE_ALIVE {
		t.Fatalf("detached actor is %v, want ALIVE", st)
	}
	// Its last detached actor dying tells the job manager.
	if _, err := f.m.kill(&pb.KillActorRequest{ActorId: detached.GetActorId()}); err != nil {
		t.Fatal(err)
	}
	testwait.Eventually(t, 10*time.Second, "the job manager to hear the detached actors are gone", func() bool { return slices.Contains(f.jobs.goneJobs(), f.job) })

	// A finished job's non-detached actors die.
	other := f.spec(nil)
	if _, err := f.create(t, t.Context(), other); err != nil {
		t.Fatal(err)
	}
	if n := f.m.jobFinished(f.job); n != 1 {
		t.Fatalf("jobFinished stopped %d actors, want 1", n)
	}
	if st := f.actor(t, other).GetState(); st != pb.ActorState_ACTOR_STATE_DEAD {
		t.Fatalf("actor of the finished job is %v, want DEAD", st)
	}
}
