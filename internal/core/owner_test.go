package core

import (
	"context"
	"errors"
	"log/slog"
	"testing"
	"time"

	"github.com/goray/goray/internal/errs"
	"github.com/goray/goray/internal/ids"
	"github.com/goray/goray/internal/testwait"
)

// TestOwnerDied: a Get of an object whose owner process dies while the Get
// waits (or before it asks) fails with ErrOwnerDied instead of hanging.
// Two cores talk over real gRPC on loopback; the owner "dies" by stopping
// its server.
func TestOwnerDied(t *testing.T) {
	owner := newCore(slog.New(slog.DiscardHandler), "tok")
	if err := owner.listen("127.0.0.1"); err != nil {
		t.Fatal(err)
	}
	borrower := newCore(slog.New(slog.DiscardHandler), "tok")
	t.Cleanup(borrower.shutdown)
	owner.jobID = ids.JobIDFromUint32(1)
	owner.putTID = ids.NewTaskID(owner.jobID)
	// An object its owner has not got yet (its task still runs).
	ref, _ := owner.newRef(owner.nextPutID())

	done := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		_, err := borrower.GetPayload(ctx, ref.Info())
		done <- err
	}()
	testwait.Eventually(t, 10*time.Second, "the borrower's GetObject waiting at the owner", func() bool {
		return owner.waitingGets.Load() == 1
	})
	select {
	case err := <-done:
		t.Fatalf("Get returned %v before the owner died, want it to wait", err)
	default:
	}
	owner.srv.Stop()
	select {
	case err := <-done:
		if !errors.Is(err, errs.ErrOwnerDied) {
			t.Fatalf("Get after the owner died: got %v, want ErrOwnerDied", err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("Get still waits 20 s after the owner died")
	}
	owner.shutdown()

	// Asking a dead owner fails at once too.
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if _, err := borrower.GetPayload(ctx, ref.Info()); !errors.Is(err, errs.ErrOwnerDied) {
		t.Fatalf("Get from an owner that is gone: got %v, want ErrOwnerDied", err)
	}
}
