package core

import (
	"context"

	"github.com/goray/goray/internal/errs"
)

// WaitN blocks until n of count refs are ready (their value or their error
// is there) or ctx ends, and reports which: ready[i] is the i-th ref's, and
// at most n are true, as Ray's wait reports at most num_returns. ref(i) is
// the i-th ref and the core that waits for it (the client gateway holds a
// core per namespace; a program holds one); it is asked for a ref only when
// needed, so a call that finds n ready refs early costs no more than that.
// n is clamped to [0, count]. When ctx ends first it returns ctx's error (a
// passed deadline as a timeout error, errs.Context) with the refs ready at
// that moment. It is the one wait of objectstore.Wait and the gateway's
// ClientService.Wait.
func WaitN(ctx context.Context, count, n int, ref func(i int) (*Core, RefInfo)) ([]bool, error) {
	n = min(max(n, 0), count)
	ready := make([]bool, count)
	// Fast path: enough of the refs are their core's own and ready.
	found := 0
	for i := 0; i < count && found < n; i++ {
		if c, r := ref(i); c.Ready(r) {
			ready[i] = true
			found++
		}
	}
	if found == n {
		return ready, nil
	}
	clear(ready)
	// One waiter per ref, each reporting once; all are waited for before
	// returning, so none outlives the call.
	ch := make(chan int, count)
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	for i := range count {
		c, r := ref(i)
		go func() {
			if c.WaitReady(wctx, r) == nil {
				ch <- i
			} else {
				ch <- -1
			}
		}()
	}
	var err error
	found, replies := 0, 0
	for found < n && replies < count && err == nil {
		select {
		case i := <-ch:
			replies++
			if i >= 0 {
				ready[i] = true
				found++
			}
		case <-ctx.Done():
			err = errs.Context(ctx.Err(), "wait for refs")
		}
	}
	cancel()
	for ; replies < count; replies++ {
		<-ch // later ones are not reported: at most n are
	}
	return ready, err
}

// WaitN is the package's WaitN over count refs this core waits for.
func (c *Core) WaitN(ctx context.Context, count, n int, ref func(i int) RefInfo) ([]bool, error) {
	return WaitN(ctx, count, n, func(i int) (*Core, RefInfo) { return c, ref(i) })
}
