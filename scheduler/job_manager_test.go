package scheduler

import (
	"crypto/sha256"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/goray/goray/internal/ids"
	pb "github.com/goray/goray/proto/goray/v1"
)

// fakeJobActors is the actor side of a job: how many detached actors live
// and which calls the job manager made.
type fakeJobActors struct {
	mu       sync.Mutex
	detached int
	gone     []string
	finished []ids.JobID
}

func (f *fakeJobActors) driverGone(_ ids.JobID, reason string) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.gone = append(f.gone, reason)
	return f.detached
}

func (f *fakeJobActors) jobFinished(job ids.JobID) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.finished = append(f.finished, job)
	return 0
}

type jobNodeList []*NodeRecord

func (l jobNodeList) aliveNodes() []*NodeRecord { return l }

func newTestJobManager(t *testing.T, store Store, actors jobActors, raylets rayletClient, nodes jobNodes) *jobManager {
	t.Helper()
	env := newManagerEnv(t)
	m := newJobManager(env.ctx, env.wg, env.log, store, t.TempDir(), 1<<20, time.Minute, raylets, nodes)
	m.actors = actors
	return m
}

func registerTestJob(t *testing.T, m *jobManager, driver string) ids.JobID {
	t.Helper()
	sum := sha256.Sum256([]byte("binary"))
	resp, err := m.register(&pb.RegisterJobRequest{BinarySha256: sum[:], BinarySize: 6, DriverAddress: driver})
	if err != nil {
		t.Fatal(err)
	}
	id, err := ids.ParseJobID(resp.GetJobId())
	if err != nil {
		t.Fatal(err)
	}
	return id
}

func TestJobManagerFinishTellsActorsAndRaylets(t *testing.T) {
	actors := &fakeJobActors{}
	raylets := newFakeRaylets()
	nodes := jobNodeList{{Address: "a", Alive: true}, {Address: "b", Alive: true}}
	m := newTestJobManager(t, NewMemoryStore(), actors, raylets, nodes)
	id := registerTestJob(t, m, "driver")
	if known, finished := m.jobState(id); !known || finished {
		t.Fatalf("got known %v finished %v, want a running job", known, finished)
	}
	if err := m.finish(id, "test"); err != nil {
		t.Fatal(err)
	}
	if _, finished := m.jobState(id); !finished {
		t.Fatal("job not finished")
	}
	if !slices.Equal(actors.finished, []ids.JobID{id}) {
		t.Fatalf("actor manager told of finished jobs %v, want [%s]", actors.finished, id)
	}
	for _, addr := range []string{"a", "b"} {
		if got := raylets.finished[addr]; !slices.Equal(got, []ids.JobID{id}) {
			t.Fatalf("raylet %s told of finished jobs %v, want [%s]", addr, got, id)
		}
	}
	if got := m.recentlyFinished(time.Now()); len(got) != 1 {
		t.Fatalf("got %d recently finished jobs, want 1", len(got))
	}
	if err := m.finish(id, "again"); err != nil || len(actors.finished) != 1 {
		t.Fatalf("finishing twice: err %v, %d notices, want nil and 1", err, len(actors.finished))
	}
}

func TestJobManagerKeepsJobForDetachedActors(t *testing.T) {
	actors := &fakeJobActors{detached: 1}
	m := newTestJobManager(t, NewMemoryStore(), actors, newFakeRaylets(), jobNodeList{})
	id := registerTestJob(t, m, "driver")
	if err := m.finish(id, "its driver went away"); err != nil {
		t.Fatal(err)
	}
	if _, finished := m.jobState(id); finished {
		t.Fatal("job finished although a detached actor lives")
	}
	// The last detached actor died.
	actors.mu.Lock()
	actors.detached = 0
	actors.mu.Unlock()
	m.detachedActorsGone(id)
	if _, finished := m.jobState(id); !finished {
		t.Fatal("job not finished after its last detached actor died")
	}
	if got := actors.gone[len(actors.gone)-1]; got != "its driver went away; its last detached actor died" {
		t.Fatalf("got reason %q, want the driver's reason and the detached actor's death", got)
	}
}

func TestJobManagerOrphansFinishAfterReconnectTimeout(t *testing.T) {
	store := NewMemoryStore()
	first := newTestJobManager(t, store, &fakeJobActors{}, newFakeRaylets(), jobNodeList{})
	withDriver := registerTestJob(t, first, "driver")
	deployed := registerTestJob(t, first, "")

	// A new head on the same store: the job with a driver is an orphan.
	m := newTestJobManager(t, store, &fakeJobActors{}, newFakeRaylets(), jobNodeList{})
	start := time.Now()
	m.load(start)
	if next := registerTestJob(t, m, "d"); next.Uint32() != deployed.Uint32()+1 {
		t.Fatalf("got job %s after reload, want the number after %s", next, deployed)
	}
	m.checkOrphans(start.Add(30 * time.Second))
	if _, finished := m.jobState(withDriver); finished {
		t.Fatal("orphan finished before the reconnect timeout")
	}
	m.checkOrphans(start.Add(2 * time.Minute))
	m.wg.Wait()
	if _, finished := m.jobState(withDriver); !finished {
		t.Fatal("orphan not finished after the reconnect timeout")
	}
	if _, finished := m.jobState(deployed); finished {
		t.Fatal("a deployed job (no driver) was finished as an orphan")
	}
}
