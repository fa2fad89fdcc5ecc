package objectstore_test

import (
	"errors"
	"testing"

	"github.com/goray/goray/internal/core"
	"github.com/goray/goray/internal/ids"
	"github.com/goray/goray/objectstore"
)

// TestPublicRefConvertsInPlace: actor and task turn the core's refs into
// objectstore.Ref[T] and back in place (no allocation per call); what goes
// in comes out, for a ref that names an object and for a failed one.
func TestPublicRefConvertsInPlace(t *testing.T) {
	info := core.RefInfo{ID: ids.NewTaskID(ids.JobIDFromUint32(3)).ObjectID(1), Owner: "127.0.0.1:1"}
	ref0 := core.RefNoHold(info)
	r := core.PublicRef[objectstore.Ref[int]](ref0)
	if got := core.InfoOf(r); got != info {
		t.Fatalf("InfoOf(PublicRef(info)): got %+v, want %+v", got, info)
	}
	if r.ID() != info.ID.String() {
		t.Fatalf("ID: got %s, want %s", r.ID(), info.ID)
	}
	boom := errors.New("boom")
	failed := core.PublicRef[objectstore.Ref[string]](core.RefErr(boom))
	if _, err := failed.Get(t.Context()); !errors.Is(err, boom) {
		t.Fatalf("Get of a failed ref: got %v, want its error", err)
	}
	if n := testing.AllocsPerRun(100, func() { _ = core.InfoOf(core.PublicRef[objectstore.Ref[int]](ref0)) }); n != 0 {
		t.Fatalf("allocations per conversion: got %v, want 0", n)
	}
}
