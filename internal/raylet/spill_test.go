package raylet

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/goray/goray/internal/core"
	"github.com/goray/goray/internal/errs"
	"github.com/goray/goray/internal/ids"
	"github.com/goray/goray/internal/store"
	"github.com/goray/goray/internal/testwait"
	pb "github.com/goray/goray/proto/goray/v1"
)

// nodeStoreStats is node's object store figures as GetNodeInfo reports them.
func nodeStoreStats(t *testing.T, node *Raylet) *pb.ObjectStoreStats {
	t.Helper()
	info, err := nodeClient(t, node).GetNodeInfo(callCtx(t), &pb.GetNodeInfoRequest{})
	if err != nil {
		t.Fatalf("GetNodeInfo: %v", err)
	}
	return info.GetObjectStore()
}

// filesIn lists the files under dir (recursively).
func filesIn(t *testing.T, dir string) []string {
	t.Helper()
	var out []string
	err := filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if !d.IsDir() && d.Name() != ".goray-owner" {
			out = append(out, p)
		}
		return nil
	})
	if err != nil {
		t.Fatalf("walk %s: %v", dir, err)
	}
	return out
}

// The acceptance test of the store's capacity, on a real node and a real
// driver (gRPC over loopback, the arena in /dev/shm, spill files on disk):
// putting three times the capacity while holding every ref spills, and every
// byte reads back intact (restored from disk); a put larger than the
// capacity fails with ErrObjectStoreFull naming both and the node keeps
// serving; releasing the objects leaves no spilled file. A second node
// pulls spilled objects straight from the first's spill files.
func TestSpillRestoreEndToEnd(t *testing.T) {
	const capacity = 8 << 20
	head := startTestHead(t, Config{
		Resources:         map[string]float64{"CPU": 1},
		TokenFile:         filepath.Join(t.TempDir(), "token"),
		Logger:            testLogger(t),
		Stderr:            t.Output(),
		ObjectStoreMemory: capacity,
		ObjectSpillingDir: filepath.Join(t.TempDir(), "spill"),
	}, headOpts{})
	if !strings.HasPrefix(head.SpillDir(), head.cfg.ObjectSpillingDir) {
		t.Fatalf("spill dir %s is not in the configured %s", head.SpillDir(), head.cfg.ObjectSpillingDir)
	}
	// The second node starts first, so that it stops after the driver.
	node := startNode(t, head, map[string]float64{"CPU": 1})
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	defer cancel()
	c, err := core.InitDriver(ctx, core.Options{Address: head.Address(), Token: head.Token(), Logger: testLogger(t)})
	if err != nil {
		t.Fatalf("InitDriver: %v", err)
	}
	t.Cleanup(c.Shutdown)

	// 3 × the capacity in objects of 1 MiB and a bit, each its own pattern.
	const size = 1<<20 + 123
	n := 3 * capacity / size
	pattern := func(i int) []byte {
		b := make([]byte, size)
		for k := range b {
			b[k] = byte(k*7 + i*13)
		}
		return b
	}
	refs := make([]core.Ref, n)
	for i := range refs {
		if refs[i], err = c.Put(ctx, pattern(i)); err != nil {
			t.Fatalf("put %d of %d (%d bytes each, capacity %d): %v", i+1, n, size, capacity, err)
		}
	}
	st := nodeStoreStats(t, head)
	if st.GetCapacityBytes() != capacity || st.GetUsedBytes() > capacity || st.GetSpilledObjects() == 0 {
		t.Fatalf("after putting %d bytes into a %d-byte store: got %v, want objects spilled and use within the capacity", n*size, capacity, st)
	}
	if len(filesIn(t, head.SpillDir())) == 0 {
		t.Fatal("no spill files after putting 3 × the capacity")
	}
	t.Logf("%d of %d puts written straight to a spill file", st.GetDirectSpilledTotal(), n)
	// Read in put order (the first ones were spilled), then again backwards.
	for _, order := range [][2]int{{0, 1}, {n - 1, -1}} {
		for i := order[0]; i >= 0 && i < n; i += order[1] {
			p, err := c.GetPayload(ctx, refs[i].Info())
			if err != nil {
				t.Fatalf("get %d: %v", i, err)
			}
			if !bytes.Equal(p.GetData(), pattern(i)) {
				t.Fatalf("object %d: %d bytes read back differ from the %d put", i, len(p.GetData()), size)
			}
		}
	}
	st = nodeStoreStats(t, head)
	if st.GetRestoredTotalBytes() == 0 || st.GetPinnedBytes() != 0 {
		t.Errorf("after reading every object: got %v, want bytes read back from spill files and nothing left pinned", st)
	}
	// A get that copies reads a spilled object from its spill file; a view
	// restores it into the arena, where it stays pinned until freed.
	first := -1
	for i, r := range refs {
		if w := where(head.objects, r.Info().ID); w == "spill" {
			first = i
			break
		}
	}
	if first < 0 {
		t.Fatal("no object is spilled after reading them all")
	}
	v, err := c.GetPayloadView(ctx, refs[first].Info())
	if err != nil || !bytes.Equal(v.GetData(), pattern(first)) {
		t.Fatalf("view of spilled object %d: differs (%v)", first, err)
	}
	if w := where(head.objects, refs[first].Info().ID); w != "arena+spill" {
		t.Errorf("object %d after a view: got %q, want it restored into the arena (keeping its spill copy)", first, w)
	}

	// A second node reads a spilled object: its raylet pulls it from the
	// first's spill file.
	spilled := -1
	head.objects.mu.Lock()
	for i, r := range refs {
		if o := head.objects.sealed[r.Info().ID]; o != nil && !o.inArena && o.spill != nil {
			spilled = i
			break
		}
	}
	head.objects.mu.Unlock()
	if spilled < 0 {
		t.Fatal("no object is spilled after reading 3 × the capacity")
	}
	spilledID := refs[spilled].Info().ID
	loc := &pb.ObjectLocation{NodeId: head.nodeID[:], RayletAddress: head.Address(), Size: size}
	job := c.JobID()
	resp, err := nodeClient(t, node).PullObject(callCtx(t), &pb.PullObjectRequest{ObjectId: spilledID[:], Location: loc, JobId: job[:], Pin: pb.PinMode_PIN_MODE_READ})
	if err != nil {
		t.Fatalf("PullObject of a spilled object from another node: %v", err)
	}
	m, err := store.OpenArena(node.StoreDir())
	if err != nil {
		t.Fatal(err)
	}
	got, err := m.View(resp.GetLocal().GetArenaOffset(), resp.GetLocal().GetSize())
	if err != nil || !bytes.Equal(got, pattern(spilled)) {
		t.Fatalf("object %d pulled from a spill file differs (%v)", spilled, err)
	}
	if _, err := nodeClient(t, node).UnpinObjects(callCtx(t), &pb.UnpinObjectsRequest{ObjectIds: [][]byte{spilledID[:]}}); err != nil {
		t.Fatalf("UnpinObjects: %v", err)
	}

	// Too large for the store, ever: a clear error, and the node serves on.
	_, err = c.Put(ctx, make([]byte, capacity+1))
	if !errors.Is(err, errs.ErrObjectStoreFull) {
		t.Fatalf("put of capacity+1 bytes: got %v, want ErrObjectStoreFull", err)
	}
	for _, want := range []string{"8388609 bytes", "capacity is 8388608 bytes"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("put of capacity+1 bytes: got %q, want it to say %q", err, want)
		}
	}
	extra, err := c.Put(ctx, pattern(n))
	if err != nil {
		t.Fatalf("put after the failed one: %v", err)
	}
	if p, err := c.GetPayload(ctx, extra.Info()); err != nil || !bytes.Equal(p.GetData(), pattern(n)) {
		t.Fatalf("get after the failed put: %v", err)
	}

	// Drop every ref: once the GC finds them, their objects are freed, no
	// spilled file is left and nothing is in the store.
	refs, extra = nil, core.Ref{}
	testwait.Eventually(t, 30*time.Second, "every dropped object freed, in memory and on disk", func() bool {
		runtime.GC()
		st := nodeStoreStats(t, head)
		return len(filesIn(t, head.SpillDir())) == 0 && st.GetUsedBytes() == 0 && st.GetSpilledBytes() == 0 && st.GetSpilledObjects() == 0
	})
}

// A finished job's spilled objects go with it, and a raylet's spill
// directory goes when it stops.
func TestSpillDirRemoved(t *testing.T) {
	head := startHead(t, map[string]float64{"CPU": 1})
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	node, err := Start(ctx, Config{Address: head.Address(), Resources: map[string]float64{"CPU": 1},
		TokenFile: head.TokenFile(), Logger: testLogger(t), Stderr: t.Output(), ObjectStoreMemory: 1 << 20})
	if err != nil {
		t.Fatalf("Start node: %v", err)
	}
	defer node.Stop()
	if !strings.HasPrefix(node.SpillDir(), node.dataDir) {
		t.Errorf("default spill dir %s is not under the data dir %s", node.SpillDir(), node.dataDir)
	}
	nc := nodeClient(t, node)
	job := ids.JobIDFromUint32(5)
	task := ids.NewTaskID(job)
	for i := range 6 { // 1.5 MiB into a 1 MiB store
		id := task.ObjectID(uint32(i + 1))
		a, err := nc.AllocateObject(callCtx(t), &pb.AllocateObjectRequest{ObjectId: id[:], Size: 256 << 10, JobId: job[:]})
		if err != nil || !a.GetOk() {
			t.Fatalf("AllocateObject %d: %v, %v", i, a, err)
		}
		if _, err := nc.SealObject(callCtx(t), &pb.SealObjectRequest{ObjectId: id[:], Size: 256 << 10, JobId: job[:]}); err != nil {
			t.Fatalf("SealObject %d: %v", i, err)
		}
	}
	if len(filesIn(t, node.SpillDir())) == 0 {
		t.Fatal("no spill files after putting 1.5 × the capacity")
	}
	if err := node.finishJob(callCtx(t), job); err != nil {
		t.Fatal(err)
	}
	// A spill batch under way when the job ended removes its file when it
	// ends.
	testwait.Eventually(t, 10*time.Second, "no spill file of the finished job", func() bool {
		return len(filesIn(t, node.SpillDir())) == 0
	})
	dir := node.SpillDir()
	node.Stop()
	if _, err := os.Stat(dir); !os.IsNotExist(err) {
		t.Errorf("spill dir after Stop: %v, want it removed", err)
	}
}

// With no background spilling (threshold 1), every put into a full arena
// is written by its producer straight to a spill file: the objects read
// back intact, from this node and through the store's own pin, and
// dropping them leaves no file.
func TestDirectSpillEndToEnd(t *testing.T) {
	const capacity = 8 << 20
	head := startTestHead(t, Config{
		Resources:               map[string]float64{"CPU": 1},
		TokenFile:               filepath.Join(t.TempDir(), "token"),
		Logger:                  testLogger(t),
		Stderr:                  t.Output(),
		ObjectStoreMemory:       capacity,
		ObjectSpillingThreshold: 1,
		ObjectSpillingDir:       filepath.Join(t.TempDir(), "spill"),
	}, headOpts{})
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	defer cancel()
	c, err := core.InitDriver(ctx, core.Options{Address: head.Address(), Token: head.Token(), Logger: testLogger(t)})
	if err != nil {
		t.Fatalf("InitDriver: %v", err)
	}
	t.Cleanup(c.Shutdown)

	const size = 1 << 20
	n := 3 * capacity / size
	pattern := func(i int) []byte { return bytes.Repeat([]byte{byte(i + 1)}, size) }
	refs := make([]core.Ref, n)
	for i := range refs {
		if refs[i], err = c.Put(ctx, pattern(i)); err != nil {
			t.Fatalf("put %d of %d: %v", i+1, n, err)
		}
	}
	st := nodeStoreStats(t, head)
	if st.GetDirectSpilledTotal() == 0 || st.GetSpilledObjects() < st.GetDirectSpilledTotal() || st.GetUsedBytes() > capacity {
		t.Fatalf("after putting 3 × the capacity with no background spilling: got %v, want puts written straight to spill files", st)
	}
	direct := 0
	for i, r := range refs {
		if where(head.objects, r.Info().ID) == "spill" {
			direct++
		}
		p, err := c.GetPayload(ctx, r.Info())
		if err != nil || !bytes.Equal(p.GetData(), pattern(i)) {
			t.Fatalf("object %d read back: differs (%v)", i, err)
		}
	}
	if direct == 0 {
		t.Fatal("no object is in a spill file only")
	}
	v, err := c.GetPayloadView(ctx, refs[n-1].Info()) // restored into the arena
	if err != nil || !bytes.Equal(v.GetData(), pattern(n-1)) {
		t.Fatalf("view of the last object: differs (%v)", err)
	}
	refs, v = nil, nil
	testwait.Eventually(t, 30*time.Second, "every dropped object freed, in memory and on disk", func() bool {
		runtime.GC()
		st := nodeStoreStats(t, head)
		return len(filesIn(t, head.SpillDir())) == 0 && st.GetUsedBytes() == 0 && st.GetSpilledObjects() == 0
	})
}
