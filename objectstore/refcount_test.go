package objectstore_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/goray/goray/actor"
	"github.com/goray/goray/internal/core"
	"github.com/goray/goray/internal/ids"
	"github.com/goray/goray/internal/testwait"
	"github.com/goray/goray/objectstore"
	goray "github.com/goray/goray/runtime"
	"github.com/goray/goray/task"
)

// Holder is an actor that keeps refs it was given, for the borrowing tests.
type Holder struct{ kept []objectstore.Ref[[]byte] }

func (h *Holder) Keep(_ context.Context, refs []objectstore.Ref[[]byte]) (int, error) {
	h.kept = append(h.kept, refs...)
	return len(h.kept), nil
}

func (h *Holder) Sum(ctx context.Context, _ int) (int, error) {
	n := 0
	for _, r := range h.kept {
		b, err := r.Get(ctx)
		if err != nil {
			return 0, err
		}
		n += len(b)
	}
	return n, nil
}

func (h *Holder) Drop(context.Context, int) (int, error) {
	h.kept = nil
	runtime.GC()
	return 0, nil
}

func (h *Holder) Crash(context.Context, int) (int, error) { os.Exit(3); return 0, nil }

// Counts reports the hosting process's object tables.
func (h *Holder) Counts(context.Context, int) (core.ObjectCounts, error) {
	runtime.GC()
	c, err := core.Current()
	if err != nil {
		return core.ObjectCounts{}, err
	}
	return c.ObjectCounts(), nil
}

var (
	holderType   = actor.Register("objectstoretest.holder", func() *Holder { return &Holder{} })
	holderKeep   = actor.Method1(holderType, "keep", (*Holder).Keep)
	holderSum    = actor.Method1(holderType, "sum", (*Holder).Sum)
	holderDrop   = actor.Method1(holderType, "drop", (*Holder).Drop)
	holderCrash  = actor.Method1(holderType, "crash", (*Holder).Crash)
	holderCounts = actor.Method1(holderType, "counts", (*Holder).Counts)

	// sumRefs reads the refs inside its argument.
	sumRefs = task.Register1("objectstoretest.sum_refs", func(ctx context.Context, b Bag) (int, error) {
		n := 0
		for _, r := range b.List {
			v, err := r.Get(ctx)
			if err != nil {
				return 0, fmt.Errorf("list: %w", err)
			}
			n += v
		}
		for k, r := range b.ByName {
			v, err := r.Get(ctx)
			if err != nil {
				return 0, fmt.Errorf("map %q: %w", k, err)
			}
			n += v
		}
		if b.One != nil {
			v, err := b.One.Get(ctx)
			if err != nil {
				return 0, fmt.Errorf("one: %w", err)
			}
			n += v
		}
		return n, nil
	})
	// makeOwnRefs returns refs to objects the worker puts itself.
	makeOwnRefs = task.Register1("objectstoretest.make_refs", func(ctx context.Context, n int) ([]objectstore.Ref[int], error) {
		out := make([]objectstore.Ref[int], n)
		for i := range out {
			r, err := objectstore.Put(ctx, i)
			if err != nil {
				return nil, err
			}
			out[i] = r
		}
		return out, nil
	})
	// nest returns its argument's refs inside a new value, one level down.
	nest = task.Register1("objectstoretest.nest", func(ctx context.Context, b Bag) (Nested, error) {
		return Nested{Bag: b, Depth: 1}, nil
	})
	// callHolder calls the actor whose handle it was given, and returns it.
	callHolder = task.Register1("objectstoretest.call_holder", func(ctx context.Context, h actor.Handle[Holder]) (actor.Handle[Holder], error) {
		if _, err := holderCounts.Remote(ctx, h, objectstore.Val(0)).Get(ctx); err != nil {
			return actor.Handle[Holder]{}, err
		}
		return h, nil
	})
	identity = task.Register1("objectstoretest.identity", func(_ context.Context, x int) (int, error) { return x, nil })
)

// Bag holds refs in each shape a value can: a slice, a map, a pointer.
type Bag struct {
	List   []objectstore.Ref[int]
	ByName map[string]objectstore.Ref[int]
	One    *objectstore.Ref[int]
}

type Nested struct {
	Bag   Bag
	Depth int
}

func driverCore(t *testing.T) *core.Core {
	t.Helper()
	c, err := core.Current()
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// TestDroppedRefsAreFreed: puts and task results whose refs are dropped
// leave the owner's table (and their lineage) once the GC finds the refs;
// a released ref frees at once and its Get says so.
func TestDroppedRefsAreFreed(t *testing.T) {
	ctx := testCtx(t, 120*time.Second)
	c := driverCore(t)
	var made []ids.ObjectID
	tracked := func() (owned, lineage int) {
		for _, id := range made {
			if c.Owns(id) {
				owned++
			}
			if c.HasLineage(id) {
				lineage++
			}
		}
		return owned, lineage
	}
	func() {
		refs := make([]objectstore.Ref[int], 0, 600)
		for i := range 300 {
			r, err := objectstore.Put(ctx, i)
			if err != nil {
				t.Fatal(err)
			}
			core.InfoOf(r) // shared, as a ref passed on is: counted in the table
			refs = append(refs, r, identity.Remote(ctx, objectstore.Val(i)))
		}
		for i, r := range refs {
			if _, err := r.Get(ctx); err != nil {
				t.Fatalf("ref %d: %v", i, err)
			}
			made = append(made, core.InfoOf(r).ID)
		}
		big, err := objectstore.Put(ctx, make([]byte, 1<<20))
		if err != nil {
			t.Fatal(err)
		}
		made = append(made, core.InfoOf(big).ID)
		if owned, _ := tracked(); owned != len(made) {
			t.Fatalf("objects kept while their refs live: got %d, want %d", owned, len(made))
		}
		runtime.KeepAlive(refs)
		runtime.KeepAlive(big)
	}()
	testwait.Eventually(t, 30*time.Second, "the dropped refs' objects and lineage freed", func() bool {
		runtime.GC()
		owned, lineage := tracked()
		return owned == 0 && lineage == 0
	})

	r, err := objectstore.Put(ctx, make([]byte, 200<<10))
	if err != nil {
		t.Fatal(err)
	}
	id := core.InfoOf(r).ID
	copyOf := r
	r.Release()
	if c.Owns(id) {
		t.Fatal("object still kept after its only ref was released")
	}
	if _, err := copyOf.Get(ctx); !errors.Is(err, goray.ErrObjectFreed) {
		t.Fatalf("Get of a released ref: got %v, want ErrObjectFreed", err)
	}
	r.Release() // twice: nothing
}

// TestRefsInsideValues: refs in a slice, a map and a pointer field reach a
// task live; a result holding refs (the worker's own objects, and the
// driver's handed back one level down) comes back live; 10,000 refs in one
// result all read back.
func TestRefsInsideValues(t *testing.T) {
	ctx := testCtx(t, 120*time.Second)
	var b Bag
	want := 0
	b.ByName = map[string]objectstore.Ref[int]{}
	for i := range 5 {
		r, err := objectstore.Put(ctx, i+1)
		if err != nil {
			t.Fatal(err)
		}
		b.List = append(b.List, r)
		b.ByName[fmt.Sprint("k", i)] = identity.Remote(ctx, objectstore.Val(10*(i+1)))
		want += i + 1 + 10*(i+1)
	}
	one, err := objectstore.Put(ctx, 1000)
	if err != nil {
		t.Fatal(err)
	}
	b.One = &one
	want += 1000
	if got, err := sumRefs.Remote(ctx, objectstore.Val(b)).Get(ctx); err != nil || got != want {
		t.Fatalf("sum of refs inside the argument: got %d, %v; want %d", got, err, want)
	}

	// Refs handed back inside a result, one level down.
	n, err := nest.Remote(ctx, objectstore.Val(b)).Get(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if got, err := sumRefs.Remote(ctx, objectstore.Val(n.Bag)).Get(ctx); err != nil || got != want {
		t.Fatalf("sum of refs returned inside a result: got %d, %v; want %d", got, err, want)
	}

	// The worker's own objects, returned as refs: they outlive the worker's
	// refs to them (its GC runs) because the driver borrows them.
	const many = 10000
	refs, err := makeOwnRefs.Remote(ctx, objectstore.Val(many)).Get(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(refs) != many {
		t.Fatalf("got %d refs, want %d", len(refs), many)
	}
	h := spawnHolder(t)
	if _, err := holderDrop.Remote(ctx, h, objectstore.Val(0)).Get(ctx); err != nil { // a GC in some worker
		t.Fatal(err)
	}
	for i, r := range refs {
		if v, err := r.Get(ctx); err != nil || v != i {
			t.Fatalf("ref %d of the result: got %d, %v; want %d", i, v, err, i)
		}
	}

	// A zero ref inside a value travels as a zero ref; a failed one cannot.
	var zero Bag
	zero.List = []objectstore.Ref[int]{{}}
	if _, err := sumRefs.Remote(ctx, objectstore.Val(zero)).Get(ctx); !errors.Is(err, goray.ErrTaskFailed) || !strings.Contains(err.Error(), "zero Ref") {
		t.Fatalf("a zero ref inside an argument, read: got %v, want the task's error about a zero Ref", err)
	}
	// Values that cannot travel fail at the call, naming the type.
	ch := sumRefsChan.Remote(ctx, objectstore.Val(ChanBag{C: make(chan int)}))
	if _, err := ch.Get(ctx); !errors.Is(err, goray.ErrInvalidArgument) {
		t.Fatalf("a channel inside an argument: got %v, want ErrInvalidArgument", err)
	}
}

// ChanBag holds a value that cannot travel.
type ChanBag struct{ C chan int }

var sumRefsChan = task.Register1("objectstoretest.chan_bag", func(_ context.Context, b ChanBag) (int, error) { return 0, nil })

func spawnHolder(t *testing.T) actor.Handle[Holder] {
	t.Helper()
	ctx := testCtx(t, 60*time.Second)
	h, err := actor.Spawn(ctx, holderType)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = actor.Kill(context.Background(), h) })
	return h
}

// TestHandlesTravel: an actor handle passed to a task reaches it live, and
// the handle the task returns calls the same actor.
func TestHandlesTravel(t *testing.T) {
	ctx := testCtx(t, 60*time.Second)
	h := spawnHolder(t)
	back, err := callHolder.Remote(ctx, objectstore.Val(h)).Get(ctx)
	if err != nil {
		t.Fatalf("a task calling the handle it was passed: %v", err)
	}
	if back.ID() != h.ID() {
		t.Fatalf("returned handle names actor %s, want %s", back.ID(), h.ID())
	}
	if _, err := holderCounts.Remote(ctx, back, objectstore.Val(0)).Get(ctx); err != nil {
		t.Fatalf("call on the returned handle: %v", err)
	}
}

// TestBorrowersKeepAndFree: an actor that keeps the driver's refs keeps
// their objects alive after the driver drops its own; when it drops them,
// or its process dies, the driver frees them.
func TestBorrowersKeepAndFree(t *testing.T) {
	ctx := testCtx(t, 120*time.Second)
	c := driverCore(t)
	for _, crash := range []bool{false, true} {
		h := spawnHolder(t)
		var kept []ids.ObjectID
		owned := func() int {
			n := 0
			for _, id := range kept {
				if c.Owns(id) {
					n++
				}
			}
			return n
		}
		func() {
			refs := make([]objectstore.Ref[[]byte], 3)
			for i := range refs {
				var err error
				if refs[i], err = objectstore.Put(ctx, make([]byte, 200<<10)); err != nil { // stored
					t.Fatal(err)
				}
				kept = append(kept, core.InfoOf(refs[i]).ID)
			}
			if _, err := holderKeep.Remote(ctx, h, objectstore.Val(refs)).Get(ctx); err != nil {
				t.Fatal(err)
			}
		}()
		// The driver's refs are gone; the actor's keep the objects.
		for range 5 {
			runtime.GC()
		}
		if got, err := holderSum.Remote(ctx, h, objectstore.Val(0)).Get(ctx); err != nil || got != 3*200<<10 {
			t.Fatalf("crash=%v: the actor reading the refs it keeps: got %d, %v", crash, got, err)
		}
		if got := owned(); got != 3 {
			t.Fatalf("crash=%v: objects kept while the actor holds their refs: got %d, want 3", crash, got)
		}
		if crash {
			_, _ = holderCrash.Remote(ctx, h, objectstore.Val(0)).Get(ctx)
		} else if _, err := holderDrop.Remote(ctx, h, objectstore.Val(0)).Get(ctx); err != nil {
			t.Fatal(err)
		}
		testwait.Eventually(t, 30*time.Second, fmt.Sprintf("crash=%v: objects freed after their borrower let go", crash), func() bool {
			runtime.GC()
			return owned() == 0
		})
	}
}
