package objectstore_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"maps"
	"reflect"
	"testing"
	"time"

	"github.com/goray/goray/internal/testenv"
	"github.com/goray/goray/objectstore"
	pb "github.com/goray/goray/proto/goray/v1"
	"github.com/goray/goray/runtime"
	"github.com/goray/goray/task"
	"google.golang.org/protobuf/proto"
)

var (
	sleepMS = task.Register1("objectstoretest.sleep", func(ctx context.Context, ms int) (int, error) {
		select {
		case <-time.After(time.Duration(ms) * time.Millisecond):
		case <-ctx.Done():
		}
		return ms, nil
	})
	failTask = task.Register1("objectstoretest.fail", func(_ context.Context, x int) (int, error) {
		return 0, fmt.Errorf("fail %d", x)
	})
	cpus = task.Register1("objectstoretest.cpu", func(_ context.Context, r *pb.Resources) (float64, error) {
		return r.GetAmounts()["CPU"], nil
	})
	point = task.Register1("objectstoretest.point", func(_ context.Context, p Point) (Point, error) {
		p.X, p.Y = p.Y, p.X
		p.Tags = append(p.Tags, "swapped")
		return p, nil
	})
)

func TestMain(m *testing.M) { testenv.Main(m) }

func testCtx(t *testing.T, d time.Duration) context.Context { return testenv.Ctx(t, d) }

// Point is a struct value stored as MessagePack.
type Point struct {
	X, Y  int
	Name  string
	Tags  []string
	Attrs map[string]float64
	Inner *Point
}

func roundTrip[T any](t *testing.T, v T) T {
	t.Helper()
	ctx := testCtx(t, 30*time.Second)
	ref, err := objectstore.Put(ctx, v)
	if err != nil {
		t.Fatalf("Put(%T): got error %v, want nil", v, err)
	}
	got, err := ref.Get(ctx)
	if err != nil {
		t.Fatalf("Get(%T): got error %v, want nil", v, err)
	}
	return got
}

func checkRoundTrip[T any](t *testing.T, v T) {
	t.Helper()
	if got := roundTrip(t, v); !reflect.DeepEqual(got, v) {
		t.Fatalf("got %#v, want %#v", got, v)
	}
}

func TestPutGetValues(t *testing.T) {
	small := Point{X: 1, Y: -2, Name: "p", Tags: []string{"a", "b"}, Attrs: map[string]float64{"w": 0.5}, Inner: &Point{X: 9}}
	bigTags := make([]string, 20000) // > 100 KiB: lives in the node's store
	for i := range bigTags {
		bigTags[i] = fmt.Sprintf("tag-%06d", i)
	}
	big := Point{X: 3, Tags: bigTags}
	tests := []struct {
		name string
		v    Point
	}{
		{"small struct", small},
		{"zero struct", Point{}},
		{"large struct", big},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := roundTrip(t, tc.v); !reflect.DeepEqual(got, tc.v) && !(tc.v.Tags == nil && len(got.Tags) == 0) {
				t.Fatalf("got %+v, want %+v", got, tc.v)
			}
		})
	}
	t.Run("int", func(t *testing.T) { checkRoundTrip(t, -42) })
	t.Run("string", func(t *testing.T) { checkRoundTrip(t, "héllo") })
	t.Run("map", func(t *testing.T) { checkRoundTrip(t, map[string]int{"a": 1, "b": 2}) })
	t.Run("float", func(t *testing.T) { checkRoundTrip(t, 2.5) })
	t.Run("slice of structs", func(t *testing.T) { checkRoundTrip(t, []Point{{X: 1}, {Y: 2, Name: "n"}}) })
}

func TestPutGetBytes(t *testing.T) {
	for _, n := range []int{0, 1, 100<<10 - 1, 100 << 10, 5 << 20} {
		t.Run(fmt.Sprint(n), func(t *testing.T) {
			b := make([]byte, n)
			for i := range b {
				b[i] = byte(i * 31)
			}
			if got := roundTrip(t, b); !bytes.Equal(got, b) {
				t.Fatalf("got %d bytes, want %d identical bytes", len(got), len(b))
			}
		})
	}
}

func TestPutGetProto(t *testing.T) {
	want := &pb.Resources{Amounts: map[string]float64{"CPU": 2, "gpu": 0.5}}
	got := roundTrip(t, want)
	if !proto.Equal(got, want) {
		t.Fatalf("got %v, want %v", got, want)
	}
	// A protobuf ref passed to a task decodes as the message there.
	ctx := testCtx(t, 30*time.Second)
	ref, err := objectstore.Put(ctx, want)
	if err != nil {
		t.Fatal(err)
	}
	if c, err := cpus.Remote(ctx, ref).Get(ctx); err != nil || c != 2 {
		t.Fatalf("cpu(ref): got %v, %v, want 2, nil", c, err)
	}
	// A struct through a task.
	p := Point{X: 1, Y: 2, Attrs: map[string]float64{"k": 1}}
	gp, err := point.Remote(ctx, objectstore.Val(p)).Get(ctx)
	if err != nil || gp.X != 2 || gp.Y != 1 || !maps.Equal(gp.Attrs, p.Attrs) || len(gp.Tags) != 1 {
		t.Fatalf("point(%+v): got %+v, %v, want X and Y swapped and one tag", p, gp, err)
	}
}

func TestRefOfWrongType(t *testing.T) {
	ctx := testCtx(t, 30*time.Second)
	str, err := objectstore.Put(ctx, "a string")
	if err != nil {
		t.Fatal(err)
	}
	raw, err := objectstore.Put(ctx, []byte("raw"))
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		fn   string
		arg  any
	}{
		{"raw bytes for a protobuf", cpus.Name(), raw},
		{"string for a protobuf", cpus.Name(), str},
		{"string for an int", sleepMS.Name(), str},
		{"protobuf for a struct", point.Name(), &pb.Resources{}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := task.CallName[int](ctx, tc.fn, tc.arg).Get(ctx)
			if !errors.Is(err, runtime.ErrInvalidArgument) {
				t.Fatalf("%s(%T): got error %v, want ErrInvalidArgument", tc.fn, tc.arg, err)
			}
		})
	}
	if s, err := str.Get(ctx); err != nil || s != "a string" {
		t.Fatalf("Get: got %q, %v, want %q, nil", s, err, "a string")
	}
}

func TestZeroRef(t *testing.T) {
	var r objectstore.Ref[int]
	if _, err := r.Get(t.Context()); err == nil {
		t.Fatal("Get on a zero Ref: got nil error, want one")
	}
}

// TestArgIsTyped checks that an argument of one type is not an argument of
// another, so a typed call given the wrong type does not compile.
func TestArgIsTyped(t *testing.T) {
	argInt := reflect.TypeFor[objectstore.Arg[int]]()
	tests := []struct {
		name string
		typ  reflect.Type
		want bool
	}{
		{"Ref[int]", reflect.TypeFor[objectstore.Ref[int]](), true},
		{"Val(int)", reflect.TypeOf(objectstore.Val(1)), true},
		{"Ref[string]", reflect.TypeFor[objectstore.Ref[string]](), false},
		{"Arg[string]", reflect.TypeFor[objectstore.Arg[string]](), false},
		{"Val(string)", reflect.TypeOf(objectstore.Val("x")), false},
	}
	for _, tc := range tests {
		if got := tc.typ.Implements(argInt); got != tc.want {
			t.Errorf("%s is an Arg[int]: got %v, want %v", tc.name, got, tc.want)
		}
	}
}

// TestRefPassesThroughCallName checks that a Ref given to an untyped call
// reaches the function as its value, not as an encoding of the Ref itself.
func TestRefPassesThroughCallName(t *testing.T) {
	ctx := testCtx(t, 30*time.Second)
	ref, err := objectstore.Put(ctx, 7)
	if err != nil {
		t.Fatal(err)
	}
	got, err := task.CallName[int](ctx, sleepMS.Name(), ref).Get(ctx)
	if err != nil || got != 7 {
		t.Fatalf("CallName with a ref of 7: got %v, %v, want 7, nil", got, err)
	}
}

func TestWait(t *testing.T) {
	ctx := testCtx(t, 30*time.Second)
	// fast is submitted first, so it runs first even on a node with a
	// single task worker.
	fast := sleepMS.Remote(ctx, objectstore.Val(0))
	slow := sleepMS.Remote(ctx, objectstore.Val(4000))
	put, err := objectstore.Put(ctx, 1)
	if err != nil {
		t.Fatal(err)
	}
	failed := failTask.Remote(ctx, objectstore.Val(1))

	tests := []struct {
		name        string
		refs        []objectstore.Ref[int]
		n           int
		wantReady   []objectstore.Ref[int]
		wantPending []objectstore.Ref[int]
	}{
		{"n=1 fast first", []objectstore.Ref[int]{fast, slow}, 1, []objectstore.Ref[int]{fast}, []objectstore.Ref[int]{slow}},
		{"n=1 slow first keeps order", []objectstore.Ref[int]{slow, fast}, 1, []objectstore.Ref[int]{fast}, []objectstore.Ref[int]{slow}},
		{"n=0", []objectstore.Ref[int]{fast, put}, 0, nil, []objectstore.Ref[int]{fast, put}},
		{"n=-1 clamps to 0", []objectstore.Ref[int]{put}, -1, nil, []objectstore.Ref[int]{put}},
		{"failed counts as ready", []objectstore.Ref[int]{slow, failed}, 1, []objectstore.Ref[int]{failed}, []objectstore.Ref[int]{slow}},
		{"at most n of ready ones", []objectstore.Ref[int]{put, fast, failed}, 2, nil, nil},
		{"empty", nil, 3, nil, nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			start := time.Now()
			ready, pending, err := objectstore.Wait(ctx, tc.refs, tc.n)
			if err != nil {
				t.Fatalf("Wait: got error %v, want nil", err)
			}
			if took := time.Since(start); took > 3*time.Second {
				t.Fatalf("Wait took %s: it waited for the slow task", took)
			}
			wantN := min(max(tc.n, 0), len(tc.refs))
			if len(ready) != wantN {
				t.Fatalf("ready: got %d refs, want %d (n=%d)", len(ready), wantN, tc.n)
			}
			if len(ready)+len(pending) != len(tc.refs) {
				t.Fatalf("ready+notReady: got %d+%d refs, want %d", len(ready), len(pending), len(tc.refs))
			}
			if tc.wantReady != nil && !sameIDs(ready, tc.wantReady) {
				t.Fatalf("ready: got %v, want %v", idsOf(ready), idsOf(tc.wantReady))
			}
			if tc.wantPending != nil && !sameIDs(pending, tc.wantPending) {
				t.Fatalf("notReady: got %v, want %v", idsOf(pending), idsOf(tc.wantPending))
			}
		})
	}

	t.Run("deadline", func(t *testing.T) {
		slow2 := sleepMS.Remote(ctx, objectstore.Val(3000))
		dctx, cancel := context.WithTimeout(ctx, 200*time.Millisecond)
		defer cancel()
		start := time.Now()
		ready, pending, err := objectstore.Wait(dctx, []objectstore.Ref[int]{slow2, fast}, 2)
		if !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("Wait(n=2) with a 200ms deadline: got error %v, want context.DeadlineExceeded", err)
		}
		if took := time.Since(start); took > 3*time.Second {
			t.Fatalf("Wait with a 200ms deadline took %s (hang check)", took)
		}
		if !sameIDs(ready, []objectstore.Ref[int]{fast}) || !sameIDs(pending, []objectstore.Ref[int]{slow2}) {
			t.Fatalf("split at the deadline: got ready %v notReady %v, want ready [fast] notReady [slow]", idsOf(ready), idsOf(pending))
		}
	})

	t.Run("all", func(t *testing.T) {
		ready, pending, err := objectstore.Wait(ctx, []objectstore.Ref[int]{slow, fast}, 2)
		if err != nil || len(ready) != 2 || len(pending) != 0 {
			t.Fatalf("Wait(n=2): got %d ready, %d pending, %v, want 2, 0, nil", len(ready), len(pending), err)
		}
		if !sameIDs(ready, []objectstore.Ref[int]{slow, fast}) {
			t.Fatalf("ready: got %v, want them in the order given", idsOf(ready))
		}
	})
}

func idsOf(refs []objectstore.Ref[int]) []string {
	out := make([]string, len(refs))
	for i, r := range refs {
		out[i] = r.ID()
	}
	return out
}

func sameIDs(a, b []objectstore.Ref[int]) bool { return reflect.DeepEqual(idsOf(a), idsOf(b)) }

func TestPutChunks(t *testing.T) {
	ctx := testCtx(t, 30*time.Second)
	items := make([]int, 1001)
	for i := range items {
		items[i] = i
	}
	refs, err := objectstore.PutChunks(ctx, items, 4)
	if err != nil {
		t.Fatalf("PutChunks: %v", err)
	}
	var joined []int
	for i, r := range refs {
		c, err := r.Get(ctx)
		if err != nil {
			t.Fatalf("chunk %d: %v", i, err)
		}
		joined = append(joined, c...)
	}
	if !reflect.DeepEqual(joined, items) {
		t.Fatalf("joined chunks: got %d items, want 0..1000 in order", len(joined))
	}
}

func ExamplePut() {
	ctx := context.Background()
	ref, err := objectstore.Put(ctx, []string{"a", "b"})
	if err != nil {
		fmt.Println(err)
		return
	}
	v, err := ref.Get(ctx)
	fmt.Println(v, err)
	// Output: [a b] <nil>
}

func ExampleWait() {
	ctx := context.Background()
	fast := sleepMS.Remote(ctx, objectstore.Val(1))
	slow := sleepMS.Remote(ctx, objectstore.Val(2000))
	ready, notReady, err := objectstore.Wait(ctx, []objectstore.Ref[int]{slow, fast}, 1)
	fmt.Println(len(ready), len(notReady), err, ready[0].ID() == fast.ID())
	// Output: 1 1 <nil> true
}

func ExampleChunk() {
	chunks, _ := objectstore.Chunk([]int{1, 2, 3, 4, 5, 6, 7}, 3)
	fmt.Println(chunks)
	// Output: [[1 2 3] [4 5] [6 7]]
}
