package core

import (
	"context"

	"github.com/goray/goray/internal/errs"
)

// Waitable is one ref to wait for and the core that waits for it (the
// client gateway holds a core per namespace; a program holds one).
type Waitable struct {
	Core *Core
	Ref  RefInfo
}

// WaitN blocks until n of refs are ready (their value or their error is
// there) or ctx ends, and reports which: ready[i] is refs[i]'s, and at most
// n are true, as Ray's wait reports at most num_returns. n is clamped to
// [0, len(refs)]. When ctx ends first it returns ctx's error (a passed
// deadline as a timeout error, errs.Context) with the refs ready at that
// moment. It is the one wait of objectstore.Wait and the
// gateway's ClientService.Wait.
func WaitN(ctx context.Context, refs []Waitable, n int) ([]bool, error) {
	n = min(max(n, 0), len(refs))
	ready := make([]bool, len(refs))
	// Fast path: enough of the refs are their core's own and ready.
	count := 0
	for i, w := range refs {
		if count == n {
			return ready, nil
		}
		if w.Core.Ready(w.Ref) {
			ready[i] = true
			count++
		}
	}
	if count == n {
		return ready, nil
	}
	clear(ready)
	// One waiter per ref, each reporting once; all are waited for before
	// returning, so none outlives the call.
	ch := make(chan int, len(refs))
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	for i, w := range refs {
		go func() {
			if w.Core.WaitReady(wctx, w.Ref) == nil {
				ch <- i
			} else {
				ch <- -1
			}
		}()
	}
	var err error
	count, replies := 0, 0
	for count < n && replies < len(refs) && err == nil {
		select {
		case i := <-ch:
			replies++
			if i >= 0 {
				ready[i] = true
				count++
			}
		case <-ctx.Done():
			err = errs.Context(ctx.Err(), "wait for refs")
		}
	}
	cancel()
	for ; replies < len(refs); replies++ {
		<-ch // later ones are not reported: at most n are
	}
	return ready, err
}

// WaitN is the package's WaitN over refs this core waits for.
func (c *Core) WaitN(ctx context.Context, refs []RefInfo, n int) ([]bool, error) {
	ws := make([]Waitable, len(refs))
	for i, r := range refs {
		ws[i] = Waitable{c, r}
	}
	return WaitN(ctx, ws, n)
}
