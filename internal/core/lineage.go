package core

import (
	"bytes"
	"fmt"
	"sync"

	"github.com/goray/goray/internal/ids"
	pb "github.com/goray/goray/proto/goray/v1"
	"google.golang.org/protobuf/proto"
)

// lineage is what the owner keeps to rebuild a task's stored result when
// every copy of it is lost with its node: the task itself, run again within
// its retry budget (Ray's lineage reconstruction). Inline results live in
// the owner's memory and need none; entries go when the job does. The task
// submitter records and completes entries from its goroutines, and the
// worker service's GetObject reconstructs from them; mu guards m.
type lineage struct {
	mu sync.Mutex
	m  map[ids.ObjectID]*lineageEntry // guarded by mu
}

type lineageEntry struct {
	spec        *pb.TaskSpec
	res         map[string]float64
	opts        TaskOptions
	retriesLeft int
}

func (c *Core) recordLineage(item *taskItem, res map[string]float64, opts TaskOptions) {
	id, err := ids.ParseObjectID(item.spec.GetReturnObjectId())
	if err != nil {
		return
	}
	c.lin.mu.Lock()
	if c.lin.m == nil {
		c.lin.m = map[ids.ObjectID]*lineageEntry{}
	}
	// The spec is not changed once submitted (a rebuild runs a clone), so
	// it is kept as it is: no copy per task.
	c.lin.m[id] = &lineageEntry{spec: item.spec, res: res, opts: opts, retriesLeft: item.retriesLeft}
	c.lin.mu.Unlock()
}

// keepLineage drops the lineage of a finished task unless its result was
// stored (only stored results can be lost with a node).
func (c *Core) keepLineage(spec *pb.TaskSpec, resp *pb.ExecuteResponse) {
	if resp.GetStored() != nil {
		return
	}
	id, err := ids.ParseObjectID(spec.GetReturnObjectId())
	if err != nil {
		return
	}
	c.lin.mu.Lock()
	delete(c.lin.m, id)
	c.lin.mu.Unlock()
}

// reconstruct runs the task that made object id again, because its copy at
// lost cannot be read. Concurrent calls for one loss start one run.
func (c *Core) reconstruct(id ids.ObjectID, lost *pb.ObjectLocation) error {
	c.objs.mu.Lock()
	e := c.objs.m[id]
	if e == nil {
		c.objs.mu.Unlock()
		return fmt.Errorf("it was freed: every ref to it was dropped")
	}
	if !e.ready() || (e.loc != nil && !bytes.Equal(e.loc.GetNodeId(), lost.GetNodeId())) {
		c.objs.mu.Unlock()
		return nil // already being rebuilt, or rebuilt elsewhere
	}
	c.lin.mu.Lock()
	l := c.lin.m[id]
	if l == nil {
		c.lin.mu.Unlock()
		c.objs.mu.Unlock()
		return fmt.Errorf("it was not made by a task this process submitted (a put, or an actor call), so there is no lineage to run again")
	}
	if l.retriesLeft == 0 {
		c.lin.mu.Unlock()
		c.objs.mu.Unlock()
		return fmt.Errorf("the task %q that made it has no retries left", l.spec.GetFunctionName())
	}
	if l.retriesLeft > 0 {
		l.retriesLeft--
	}
	spec := proto.Clone(l.spec).(*pb.TaskSpec)
	res, opts, left := l.res, l.opts, l.retriesLeft
	c.lin.mu.Unlock()
	// The new entry takes over the old one's holds and borrowers.
	ne := &objEntry{done: make(chan struct{}), c: c, id: id, local: e.local, selfBorrows: e.selfBorrows,
		borrowers: e.borrowers, copies: e.copies}
	c.objs.m[id] = ne
	// The lost value's refs are the rebuilt value's to hold again.
	old := c.containedWork(e)
	c.objs.mu.Unlock()
	old.run(c)
	c.stats.Reconstructed.Add(1)
	c.log.Info("rebuilding a lost object by running its task again", "object", id, "function", spec.GetFunctionName(), "retries_left", left)
	item := &taskItem{spec: spec, entry: ne, retriesLeft: left, retryExceptions: opts.RetryExceptions}
	c.tasks.submit(item, res, opts)
	return nil
}
