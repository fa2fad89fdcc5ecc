package coord

import (
	"context"
	"fmt"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/goray/goray/internal/errs"
)

// watchBuffer is how many events a Watcher holds for its reader.
const watchBuffer = 128

// EventType is what happened to a key.
type EventType int

// The event types.
const (
	EventPut EventType = iota + 1
	EventDelete
)

func (t EventType) String() string {
	switch t {
	case EventPut:
		return "PUT"
	case EventDelete:
		return "DELETE"
	}
	return fmt.Sprintf("EventType(%d)", int(t))
}

// Event is one change of a watched key. Events of one watch arrive in
// revision order, each exactly once.
type Event struct {
	Type EventType
	// KV is the key after the change (for a delete: its key, and
	// ModRevision the revision of the delete); PrevKV the key before it,
	// when the watch asked for it (WithPrevKV).
	KV     KV
	PrevKV *KV
}

// Revision is the revision of the change.
func (e Event) Revision() int64 { return e.KV.ModRevision }

// WatchOption configures Watch.
type WatchOption interface{ applyWatch(*watchOpts) }

type watchOpts struct {
	rev    int64
	prefix bool
	prevKV bool
}

type watchFunc func(*watchOpts)

func (f watchFunc) applyWatch(o *watchOpts) { f(o) }

// FromRevision starts the watch at revision rev: every change at rev and
// after is delivered (to resume after the last event seen, pass its
// Revision()+1). Default: changes after the watch starts. A rev that was
// compacted ends the watch with ErrCompacted, whose Revision is the compact
// revision.
func FromRevision(rev int64) WatchOption { return watchFunc(func(o *watchOpts) { o.rev = rev }) }

// WithPrefix watches every key under the key given to Watch.
func WithPrefix() WatchOption { return watchFunc(func(o *watchOpts) { o.prefix = true }) }

// WithPrevKV delivers each event's previous value in Event.PrevKV.
func WithPrevKV() WatchOption { return watchFunc(func(o *watchOpts) { o.prevKV = true }) }

// Watcher is a running watch: read C until it closes, then Err says why
// (nil when ctx was cancelled). The etcd client re-establishes a broken
// stream on its own, resuming after the last event delivered, so a
// connection lost and regained loses and repeats nothing.
type Watcher struct {
	// C delivers the events in revision order.
	C <-chan Event
	// Rev is, once C is closed, the revision to resume from: one past the
	// last event delivered (or the start revision).
	err  error
	next int64
	done chan struct{}
}

// Err is why the watch ended; valid once C is closed.
func (w *Watcher) Err() error { <-w.done; return w.err }

// Next is the revision to resume from with FromRevision; valid once C is
// closed.
func (w *Watcher) Next() int64 { <-w.done; return w.next }

// Watch watches key (or, WithPrefix, every key under it) until ctx is done.
func (c *Client) Watch(ctx context.Context, key string, opts ...WatchOption) *Watcher {
	var o watchOpts
	for _, op := range opts {
		op.applyWatch(&o)
	}
	// The buffer is the point: one etcd response carries many events
	// (a transaction's), and the reader takes them without a goroutine
	// switch each.
	ch := make(chan Event, watchBuffer)
	w := &Watcher{C: ch, done: make(chan struct{}), next: o.rev}
	if key == "" {
		w.err = errs.New(errs.KindInvalidArgument, "", "watch: empty key; name a key or a prefix")
		close(ch)
		close(w.done)
		return w
	}
	var eo []clientv3.OpOption
	if o.prefix {
		eo = append(eo, clientv3.WithPrefix())
	}
	if o.rev > 0 {
		eo = append(eo, clientv3.WithRev(o.rev))
	}
	if o.prevKV {
		eo = append(eo, clientv3.WithPrevKV())
	}
	wctx, cancel := context.WithCancel(ctx)
	wch := c.cli.Watch(wctx, key, eo...)
	go func() {
		defer close(w.done)
		defer close(ch)
		defer cancel()
		for resp := range wch {
			if resp.CompactRevision > 0 {
				w.err = &errs.Error{Kind: errs.KindCompacted, Revision: resp.CompactRevision, Message: fmt.Sprintf(
					"watch %q from revision %d: etcd has compacted its history up to revision %d: read the current value (Get/Range) and watch from its revision + 1, or resume from %d and accept the lost changes",
					key, w.next, resp.CompactRevision, resp.CompactRevision)}
				return
			}
			if err := resp.Err(); err != nil {
				w.err = convert(err, fmt.Sprintf("watch %q", key))
				return
			}
			for _, ev := range resp.Events {
				e := Event{Type: EventPut, KV: fromKV(ev.Kv)}
				if ev.Type == clientv3.EventTypeDelete {
					e.Type = EventDelete
				}
				if ev.PrevKv != nil {
					p := fromKV(ev.PrevKv)
					e.PrevKV = &p
				}
				select {
				case ch <- e:
					w.next = ev.Kv.ModRevision + 1
				case <-ctx.Done():
					return
				}
			}
		}
		if ctx.Err() == nil {
			w.err = errs.New(errs.KindUnavailable, "", "watch %q ended: the etcd client was closed", key)
		}
	}()
	return w
}
