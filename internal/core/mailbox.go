package core

import "sync"

// mailbox is the one queue of calls a worker runs in arrival order: an
// actor's mailbox, and the tasks that arrive on one Execute stream (the
// caller holds one lease and may send several tasks ahead). Any goroutine
// puts; one goroutine serves it with next. mu guards queue and closed.
type mailbox[T any] struct {
	mu     sync.Mutex
	queue  []T
	closed bool
	wake   chan struct{} // size 1: a put or close since the server last looked
}

func newMailbox[T any]() *mailbox[T] { return &mailbox[T]{wake: make(chan struct{}, 1)} }

// put appends v; false when the mailbox is closed (v is not queued).
func (m *mailbox[T]) put(v T) bool {
	m.mu.Lock()
	if m.closed {
		m.mu.Unlock()
		return false
	}
	m.queue = append(m.queue, v)
	m.mu.Unlock()
	m.signal()
	return true
}

// close closes the mailbox and returns what was still queued, for the
// caller to fail; next then reports closed. Only the first close returns
// anything.
func (m *mailbox[T]) close() []T {
	m.mu.Lock()
	rest := m.queue
	m.queue, m.closed = nil, true
	m.mu.Unlock()
	m.signal()
	return rest
}

// next blocks until a call is queued, and returns it; ok is false once the
// mailbox is closed.
func (m *mailbox[T]) next() (v T, ok bool) {
	for {
		m.mu.Lock()
		if m.closed {
			m.mu.Unlock()
			return v, false
		}
		if len(m.queue) > 0 {
			v = m.queue[0]
			var zero T
			m.queue[0] = zero
			m.queue = m.queue[1:]
			m.mu.Unlock()
			return v, true
		}
		m.mu.Unlock()
		<-m.wake
	}
}

func (m *mailbox[T]) signal() {
	select {
	case m.wake <- struct{}{}:
	default:
	}
}
