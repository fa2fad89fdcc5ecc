package scheduler

import (
	"context"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"sync"
	"testing"

	"github.com/goray/goray/internal/ids"
	"github.com/goray/goray/internal/sched"
	pb "github.com/goray/goray/proto/goray/v1"
)

// Fakes for the managers' unit tests: a node view, a job view, an actor
// view and a raylet client, all in memory.

// fakeNodes is a cluster view the test edits (set, kill); it implements
// actorNodes and pgNodes.
type fakeNodes struct {
	feed *changeFeed

	mu        sync.Mutex
	nodes     map[ids.NodeID]*NodeRecord
	charged   map[ids.NodeID]sched.Resources
	committed map[string]sched.Resources // "node/pg/index" → bundle
}

func newFakeNodes(feed *changeFeed) *fakeNodes {
	return &fakeNodes{feed: feed, nodes: make(map[ids.NodeID]*NodeRecord),
		charged: make(map[ids.NodeID]sched.Resources), committed: make(map[string]sched.Resources)}
}

// add adds an alive node at addr with total (and as much available), and
// tells waiters the cluster changed.
func (f *fakeNodes) add(addr string, total map[string]float64) ids.NodeID {
	id := ids.NewNodeID()
	f.mu.Lock()
	f.nodes[id] = &NodeRecord{ID: id, Address: addr, Total: maps.Clone(total), Available: maps.Clone(total), Alive: true}
	f.mu.Unlock()
	f.feed.Notify()
	return id
}

// kill marks a node dead (without telling anyone: the test calls the
// actor manager's nodeDied itself).
func (f *fakeNodes) kill(id ids.NodeID) {
	f.mu.Lock()
	f.nodes[id].Alive = false
	f.mu.Unlock()
	f.feed.Notify()
}

func (f *fakeNodes) aliveNodes() []*NodeRecord {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []*NodeRecord
	for _, n := range f.nodes {
		if n.Alive {
			out = append(out, n.clone())
		}
	}
	slices.SortFunc(out, func(a, b *NodeRecord) int { return compareNodeIDs(a.ID, b.ID) })
	return out
}

func (f *fakeNodes) aliveAddress(id ids.NodeID) (string, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	n, ok := f.nodes[id]
	if !ok || !n.Alive {
		return "", false
	}
	return n.Address, true
}

func (f *fakeNodes) address(id ids.NodeID) (string, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	n, ok := f.nodes[id]
	if !ok {
		return "", false
	}
	return n.Address, true
}

func (f *fakeNodes) chargeActor(id ids.NodeID, res sched.Resources) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.charged[id] == nil {
		f.charged[id] = sched.Resources{}
	}
	f.charged[id].Add(res)
}

func bundleAt(node ids.NodeID, pg ids.PlacementGroupID, i int) string {
	return fmt.Sprintf("%s/%s/%d", node, pg, i)
}

func (f *fakeNodes) commitBundle(node ids.NodeID, pg ids.PlacementGroupID, i int, bundle sched.Resources) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.committed[bundleAt(node, pg, i)] = bundle.Clone()
}

func (f *fakeNodes) returnBundle(node ids.NodeID, pg ids.PlacementGroupID, i int, _ sched.Resources) {
	f.mu.Lock()
	defer f.mu.Unlock()
	delete(f.committed, bundleAt(node, pg, i))
}

func (f *fakeNodes) committedCount() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.committed)
}

// fakeJobs is a job view: every job is known and running unless finished
// says otherwise; it records the jobs told their detached actors are gone.
type fakeJobs struct {
	mu       sync.Mutex
	finished map[ids.JobID]bool
	gone     []ids.JobID
}

func (f *fakeJobs) jobState(id ids.JobID) (known, finished bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return true, f.finished[id]
}

func (f *fakeJobs) finish(id ids.JobID) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.finished == nil {
		f.finished = make(map[ids.JobID]bool)
	}
	f.finished[id] = true
}

func (f *fakeJobs) detachedActorsGone(job ids.JobID) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.gone = append(f.gone, job)
}

func (f *fakeJobs) goneJobs() []ids.JobID {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.gone)
}

// fakeRaylets is a rayletClient over no network: it records every call by
// address and fails the ones the test asks it to.
type fakeRaylets struct {
	mu sync.Mutex
	// created counts StartActor calls by address; incarnations lists the
	// incarnations asked for, in order.
	created      map[string]int
	incarnations []uint32
	killed       map[string][]ids.ActorID
	finished     map[string][]ids.JobID
	// bundles maps "addr/index" to "prepared", "committed" or "returned".
	bundles map[string]string
	// failCreate fails the next n StartActor calls (-1: every one).
	failCreate int
	// failPrepare, failCommit fail bundle calls to these addresses.
	failPrepare, failCommit map[string]bool
}

var _ rayletClient = (*fakeRaylets)(nil)

func newFakeRaylets() *fakeRaylets {
	return &fakeRaylets{created: make(map[string]int), killed: make(map[string][]ids.ActorID),
		finished: make(map[string][]ids.JobID), bundles: make(map[string]string),
		failPrepare: make(map[string]bool), failCommit: make(map[string]bool)}
}

func (f *fakeRaylets) StartActor(_ context.Context, addr string, spec *pb.ActorSpec, incarnation uint32) (*pb.StartActorResponse, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.incarnations = append(f.incarnations, incarnation)
	if f.failCreate != 0 {
		if f.failCreate > 0 {
			f.failCreate--
		}
		return nil, fmt.Errorf("raylet %s is unreachable", addr)
	}
	f.created[addr]++
	wid := ids.NewWorkerID()
	return &pb.StartActorResponse{WorkerId: wid[:], WorkerAddress: "worker@" + addr}, nil
}

func (f *fakeRaylets) StopActor(_ context.Context, addr string, aid ids.ActorID) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.killed[addr] = append(f.killed[addr], aid)
	return nil
}

func (f *fakeRaylets) StopJob(_ context.Context, addr string, job ids.JobID) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.finished[addr] = append(f.finished[addr], job)
	return nil
}

func bundleKeyAt(addr string, i int32) string { return fmt.Sprintf("%s/%d", addr, i) }

func (f *fakeRaylets) PrepareBundle(_ context.Context, addr string, req *pb.PrepareBundleRequest) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.failPrepare[addr] {
		return fmt.Errorf("raylet %s has no room for bundle %d", addr, req.GetBundleIndex())
	}
	st := "prepared"
	if req.GetCommit() {
		st = "committed"
	}
	f.bundles[bundleKeyAt(addr, req.GetBundleIndex())] = st
	return nil
}

func (f *fakeRaylets) CommitBundle(_ context.Context, addr string, req *pb.CommitBundleRequest) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.failCommit[addr] {
		return fmt.Errorf("raylet %s lost bundle %d", addr, req.GetBundleIndex())
	}
	f.bundles[bundleKeyAt(addr, req.GetBundleIndex())] = "committed"
	return nil
}

func (f *fakeRaylets) ReturnBundle(_ context.Context, addr string, req *pb.ReturnBundleRequest) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.bundles[bundleKeyAt(addr, req.GetBundleIndex())] = "returned"
	return nil
}

func (f *fakeRaylets) bundleStates() map[string]string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return maps.Clone(f.bundles)
}

func (f *fakeRaylets) createdOn(addr string) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.created[addr]
}

func (f *fakeRaylets) killedOn(addr string) []ids.ActorID {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.killed[addr])
}

// managerEnv is the background a manager runs in: a context the test
// cancels and a WaitGroup it waits for at the end.
type managerEnv struct {
	ctx  context.Context
	wg   *sync.WaitGroup
	log  *slog.Logger
	feed *changeFeed
}

func newManagerEnv(t *testing.T) managerEnv {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	wg := new(sync.WaitGroup)
	t.Cleanup(func() {
		cancel()
		wg.Wait()
	})
	return managerEnv{ctx: ctx, wg: wg, log: slog.New(slog.DiscardHandler), feed: newChangeFeed()}
}
