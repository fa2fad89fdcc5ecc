package raylet

import (
	"testing"

	"github.com/goray/goray/internal/ids"
	"github.com/goray/goray/internal/sched"
)

// TestRemoveStuckActor: a killed actor whose method ignores its context is
// taken off the books; its host is to be killed only when that leaves it
// with no actor, and then gets no new actor.
func TestRemoveStuckActor(t *testing.T) {
	p, _, _ := newTestPool(t, 2, 4)
	j, _ := p.job(ids.JobIDFromUint32(1))
	place := func() *actor {
		t.Helper()
		a, _, err := p.placeActor(j, ids.NewActorID(j.id), sched.Resources{}, nil)
		if err != nil {
			t.Fatalf("placeActor: %v", err)
		}
		return a
	}
	// One host per CPU of this machine at most: a and b share one on a
	// machine with one CPU.
	a, b := place(), place()
	var wantA *worker
	if a.worker != b.worker {
		wantA = a.worker
	}
	if w := p.removeStuckActor(a); w != wantA {
		t.Fatalf("stuck actor a (sharing its host: %v): got host %v to kill, want %v", wantA == nil, w, wantA)
	}
	if w := p.removeStuckActor(b); w != b.worker {
		t.Fatalf("stuck actor b, alone on its host: got %v to kill, want its host %s", w, b.worker.id)
	}
	if !b.worker.onPurpose || !b.worker.failing {
		t.Fatal("the host to kill is not marked killed on purpose and failing")
	}
	if p.lookupActor(a.id) != nil || p.lookupActor(b.id) != nil {
		t.Fatal("a stuck actor is still on the books")
	}
	if d := place(); d.worker == a.worker || d.worker == b.worker {
		t.Fatal("a new actor was placed on the host being killed")
	}
}
