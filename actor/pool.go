package actor

import (
	"context"
	"errors"
	"iter"
	"sync"

	"github.com/goray/goray/internal/errs"
	"github.com/goray/goray/objectstore"
)

// Pool shares work among a fixed set of actors of one type, as Ray's
// ActorPool does: every call goes to the least busy actor — the one with the
// fewest of the pool's calls in flight — and waits while every actor has
// MaxInFlight of them.
//
// Work is given as a call function, which the typed method callers fit
// as they are:
//
//	pool := actor.NewPool(h1, h2, h3)
//	inputs := []objectstore.Arg[int]{objectstore.Val(1), objectstore.Val(2)}
//	for r := range actor.Map(ctx, pool, Double.Remote, inputs) { // Double is a Caller1[T, int, int]
//		if r.Err != nil { ... } // that item failed; the others go on
//		use(r.Index, r.Value)
//	}
//
// Map yields in input order, MapUnordered as calls finish; MapChunks puts a
// slice as near-equal chunks, each once, and maps over them. NewQueue gives
// Ray's Submit / GetNext / GetNextUnordered / HasNext.
//
// A failed call is reported for its item only and the pool goes on; an actor
// whose call fails with runtime.ErrActorDied is not given further calls, and
// once every actor of the pool is dead the remaining items fail with
// runtime.ErrActorDied. A Pool is safe for concurrent use: concurrent maps
// and queues share its actors and their load.
type Pool[T any] struct {
	handles []Handle[T]

	mu          sync.Mutex
	inFlight    []int
	dead        []bool
	maxInFlight int
	next        int           // where the search for the least busy starts (round robin among ties)
	changed     chan struct{} // closed and replaced when an actor frees up or dies
}

// NewPool makes a pool of the actors. A call waits for an actor with no call
// of the pool in flight (SetMaxInFlight changes that), as in Ray.
func NewPool[T any](handles ...Handle[T]) *Pool[T] {
	return &Pool[T]{handles: append([]Handle[T](nil), handles...), inFlight: make([]int, len(handles)),
		dead: make([]bool, len(handles)), maxInFlight: 1, changed: make(chan struct{})}
}

// SetMaxInFlight lets up to n of the pool's calls be in flight to one actor
// (n < 1 means 1), so that an actor has its next call queued while it runs
// one; calls still go to the least busy actor. It returns p.
func (p *Pool[T]) SetMaxInFlight(n int) *Pool[T] {
	p.mu.Lock()
	p.maxInFlight = max(n, 1)
	p.notifyLocked()
	p.mu.Unlock()
	return p
}

// Size is the number of actors in the pool, dead ones included.
func (p *Pool[T]) Size() int { return len(p.handles) }

// Handles are the pool's actors.
func (p *Pool[T]) Handles() []Handle[T] { return append([]Handle[T](nil), p.handles...) }

// InFlight is how many of the pool's calls are in flight to each actor.
func (p *Pool[T]) InFlight() []int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]int(nil), p.inFlight...)
}

func (p *Pool[T]) notifyLocked() {
	close(p.changed)
	p.changed = make(chan struct{})
}

// errPoolDead is the error of items left when every actor of the pool died.
func errPoolDead(n int) error {
	if n == 0 {
		return errs.New(errs.KindInvalidArgument, "", "actor.Pool has no actors: pass handles to actor.NewPool")
	}
	return errs.New(errs.KindActorDied, "", "every actor of the pool (%d) is dead", n)
}

// tryAcquire takes the least busy live actor with room, if any; all dead
// reports that no actor will ever have room.
func (p *Pool[T]) tryAcquireLocked() (i int, ok, allDead bool) {
	best, live := -1, 0
	n := len(p.handles)
	for k := range n {
		j := (p.next + k) % n
		if p.dead[j] {
			continue
		}
		live++
		if p.inFlight[j] < p.maxInFlight && (best < 0 || p.inFlight[j] < p.inFlight[best]) {
			best = j
		}
	}
	if best < 0 {
		return -1, false, live == 0
	}
	p.inFlight[best]++
	p.next = (best + 1) % n
	return best, true, false
}

// acquire waits for the least busy actor with room and takes a slot on it.
func (p *Pool[T]) acquire(ctx context.Context) (int, error) {
	for {
		p.mu.Lock()
		i, ok, allDead := p.tryAcquireLocked()
		changed := p.changed
		p.mu.Unlock()
		switch {
		case ok:
			return i, nil
		case allDead:
			return -1, errPoolDead(len(p.handles))
		}
		select {
		case <-changed:
		case <-ctx.Done():
			return -1, ctx.Err()
		}
	}
}

// release frees the slot taken on actor i; err is the call's outcome.
func (p *Pool[T]) release(i int, err error) {
	p.mu.Lock()
	p.inFlight[i]--
	if errors.Is(err, errs.ErrActorDied) {
		p.dead[i] = true
	}
	p.notifyLocked()
	p.mu.Unlock()
}

// Result is the outcome of one item of a pool's work: its index in the
// input, and the call's value or error.
type Result[R any] struct {
	Index int
	Value R
	Err   error
}

// poolCall runs fn for v on an acquired actor and sends its result on out once
// the value is there, freeing the actor. getCtx bounds the wait for the
// value.
func poolCall[T, V, R any](ctx, getCtx context.Context, p *Pool[T], i, index int, fn func(context.Context, Handle[T], V) objectstore.Ref[R], v V, out chan<- Result[R], wg *sync.WaitGroup) {
	ref := fn(ctx, p.handles[i], v)
	wg.Add(1)
	go func() {
		defer wg.Done()
		val, err := ref.Get(getCtx)
		p.release(i, err)
		out <- Result[R]{Index: index, Value: val, Err: err}
	}()
}

// run submits every input, each when an actor has room, and delivers each
// result on the returned channel as it finishes. Ending stop stops
// submitting; calls already made still free their actors when they finish
// (or when ctx ends).
func run[T, V, R any](ctx, stop context.Context, p *Pool[T], fn func(context.Context, Handle[T], V) objectstore.Ref[R], inputs []V) <-chan Result[R] {
	out := make(chan Result[R], len(inputs))
	go func() {
		var wg sync.WaitGroup
		defer func() {
			wg.Wait()
			close(out)
		}()
		for idx, v := range inputs {
			i, err := p.acquire(stop)
			if err != nil {
				if stop.Err() != nil && ctx.Err() == nil {
					return // the consumer stopped early
				}
				for k := idx; k < len(inputs); k++ {
					out <- Result[R]{Index: k, Err: err}
				}
				return
			}
			poolCall(ctx, ctx, p, i, idx, fn, v, out, &wg)
		}
	}()
	return out
}

// Map calls fn once per input, each on the pool's least busy actor, and
// yields the results in input order, each as soon as it and those before it
// are there. fn is a method caller's Remote (Caller1.Remote fits with
// []objectstore.Arg[A] inputs) or any func that makes one call on h.
//
// A failed call yields its error for that item only. Breaking out of the
// loop stops submitting further calls. If ctx ends, the items not yet done
// yield ctx's error.
func Map[T, V, R any](ctx context.Context, p *Pool[T], fn func(context.Context, Handle[T], V) objectstore.Ref[R], inputs []V) iter.Seq[Result[R]] {
	return func(yield func(Result[R]) bool) {
		stop, cancel := context.WithCancel(ctx)
		defer cancel()
		results := run(ctx, stop, p, fn, inputs)
		held := make(map[int]Result[R])
		next := 0
		for r := range results {
			held[r.Index] = r
			for {
				h, ok := held[next]
				if !ok {
					break
				}
				delete(held, next)
				next++
				if !yield(h) {
					return
				}
			}
		}
	}
}

// MapUnordered is Map yielding each result as soon as its call finishes;
// Result.Index says which input it is for.
func MapUnordered[T, V, R any](ctx context.Context, p *Pool[T], fn func(context.Context, Handle[T], V) objectstore.Ref[R], inputs []V) iter.Seq[Result[R]] {
	return func(yield func(Result[R]) bool) {
		stop, cancel := context.WithCancel(ctx)
		defer cancel()
		for r := range run(ctx, stop, p, fn, inputs) {
			if !yield(r) {
				return
			}
		}
	}
}

// MapChunks splits items into n near-equal chunks (objectstore.Chunk: sizes
// differ by at most one; n < 1 means one per actor of the pool), puts each
// chunk once as an object (objectstore.PutChunks) and maps fn over the
// chunks' refs on the pool, yielding one result per chunk in chunk order.
// The actor receives the chunk's values. An error is returned when a chunk
// cannot be put.
//
//	results, err := actor.MapChunks(ctx, pool, Sum.Remote, data, 0) // Sum is a Caller1[T, []int, int]
func MapChunks[T, E, R any](ctx context.Context, p *Pool[T], fn func(context.Context, Handle[T], objectstore.Arg[[]E]) objectstore.Ref[R], items []E, n int) (iter.Seq[Result[R]], error) {
	if n < 1 {
		n = max(p.Size(), 1)
	}
	refs, err := objectstore.PutChunks(ctx, items, n)
	if err != nil {
		return nil, err
	}
	args := make([]objectstore.Arg[[]E], len(refs))
	for i, r := range refs {
		args[i] = r
	}
	return Map(ctx, p, fn, args), nil
}

// Queue is Ray's ActorPool submit/get_next over a Pool, for one call
// function: Submit queues an input and returns at once; the call goes to
// the least busy actor as soon as one has room. GetNext returns results in
// submission order, GetNextUnordered as they finish. A Queue is safe for
// concurrent use.
type Queue[T, V, R any] struct {
	p  *Pool[T]
	fn func(context.Context, Handle[T], V) objectstore.Ref[R]

	mu       sync.Mutex
	pending  []queued[V] // submitted, not yet sent
	nextIdx  int         // index of the next Submit
	nextOut  int         // index GetNext returns next
	done     map[int]Result[R]
	order    []int        // indices in the order their results came
	returned map[int]bool // returned by GetNextUnordered before GetNext reached them
	out      int          // submitted and not yet returned
	ready    chan struct{}
	sending  bool
}

type queued[V any] struct {
	ctx   context.Context
	index int
	v     V
}

// NewQueue makes a submit/get-next queue over p for fn (a method caller's
// Remote, or any func that makes one call on h).
func NewQueue[T, V, R any](p *Pool[T], fn func(context.Context, Handle[T], V) objectstore.Ref[R]) *Queue[T, V, R] {
	return &Queue[T, V, R]{p: p, fn: fn, done: map[int]Result[R]{}, returned: map[int]bool{}, ready: make(chan struct{})}
}

// Submit queues a call for v and returns its index (0, 1, ... in
// submission order) at once. ctx is the call's: if it ends before an actor
// has room, the item's result is ctx's error.
func (q *Queue[T, V, R]) Submit(ctx context.Context, v V) int {
	q.mu.Lock()
	idx := q.nextIdx
	q.nextIdx++
	q.out++
	q.pending = append(q.pending, queued[V]{ctx: ctx, index: idx, v: v})
	start := !q.sending
	q.sending = true
	q.mu.Unlock()
	if start {
		go q.send()
	}
	return idx
}

// send hands pending items to actors, in order, while there are any.
func (q *Queue[T, V, R]) send() {
	results := make(chan Result[R])
	var wg sync.WaitGroup
	go func() {
		for r := range results {
			q.deliver(r)
		}
	}()
	for {
		q.mu.Lock()
		if len(q.pending) == 0 {
			q.sending = false
			q.mu.Unlock()
			break
		}
		item := q.pending[0]
		q.pending[0] = queued[V]{}
		q.pending = q.pending[1:]
		q.mu.Unlock()
		i, err := q.p.acquire(item.ctx)
		if err != nil {
			q.deliver(Result[R]{Index: item.index, Err: err})
			continue
		}
		poolCall(item.ctx, item.ctx, q.p, i, item.index, q.fn, item.v, results, &wg)
	}
	wg.Wait()
	close(results)
}

func (q *Queue[T, V, R]) deliver(r Result[R]) {
	q.mu.Lock()
	q.done[r.Index] = r
	q.order = append(q.order, r.Index)
	if len(q.order) > 2*len(q.done)+64 { // drop what GetNext returned meanwhile
		kept := q.order[:0]
		for _, idx := range q.order {
			if _, ok := q.done[idx]; ok {
				kept = append(kept, idx)
			}
		}
		q.order = kept
	}
	close(q.ready)
	q.ready = make(chan struct{})
	q.mu.Unlock()
}

// HasNext reports whether some submitted item's result has not been
// returned yet.
func (q *Queue[T, V, R]) HasNext() bool {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.out > 0
}

// errQueueEmpty is GetNext's error when nothing is left to return.
var errQueueEmpty = errs.New(errs.KindInvalidArgument, "", "actor.Queue: no submitted item left to return (check HasNext)")

// GetNext waits for the result of the oldest submitted item not yet
// returned, and returns it (its value or its call's error in Result.Err).
// It fails with runtime.ErrInvalidArgument when nothing is left, and with
// ctx's error if ctx ends first (the item stays next).
func (q *Queue[T, V, R]) GetNext(ctx context.Context) (Result[R], error) {
	return q.get(ctx, true)
}

// GetNextUnordered waits for any submitted item's result not yet returned,
// the first to finish, and returns it.
func (q *Queue[T, V, R]) GetNextUnordered(ctx context.Context) (Result[R], error) {
	return q.get(ctx, false)
}

func (q *Queue[T, V, R]) get(ctx context.Context, ordered bool) (Result[R], error) {
	for {
		q.mu.Lock()
		if q.out == 0 {
			q.mu.Unlock()
			return Result[R]{}, errQueueEmpty
		}
		for q.returned[q.nextOut] {
			delete(q.returned, q.nextOut)
			q.nextOut++
		}
		if ordered {
			if r, ok := q.done[q.nextOut]; ok {
				delete(q.done, q.nextOut)
				q.nextOut++
				q.out--
				q.mu.Unlock()
				return r, nil
			}
		} else {
			for len(q.order) > 0 {
				idx := q.order[0]
				q.order = q.order[1:]
				r, ok := q.done[idx]
				if !ok {
					continue // GetNext returned it already
				}
				delete(q.done, idx)
				if idx == q.nextOut {
					q.nextOut++
				} else {
					q.returned[idx] = true
				}
				q.out--
				q.mu.Unlock()
				return r, nil
			}
		}
		ready := q.ready
		q.mu.Unlock()
		select {
		case <-ready:
		case <-ctx.Done():
			return Result[R]{}, ctx.Err()
		}
	}
}
