package scheduler

import "sync"

// changeFeed tells waiters that the cluster changed in a way that can make
// a waiting request placeable: a node joined or died, a node's totals
// changed, an actor's or a placement group's state changed.
//
// Every manager calls Notify (under its own lock or not: mu is a leaf lock,
// taken last and never held while calling out). Waiters are the actor
// manager's waiting placements, GetActor(wait) and the placement group
// scheduler loop.
type changeFeed struct {
	mu sync.Mutex
	ch chan struct{} // guarded by mu; closed and replaced by Notify
}

func newChangeFeed() *changeFeed { return &changeFeed{ch: make(chan struct{})} }

// C returns a channel that is closed at the next Notify.
func (f *changeFeed) C() <-chan struct{} {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.ch
}

// Notify wakes everything waiting on a channel from C.
func (f *changeFeed) Notify() {
	f.mu.Lock()
	defer f.mu.Unlock()
	close(f.ch)
	f.ch = make(chan struct{})
}
