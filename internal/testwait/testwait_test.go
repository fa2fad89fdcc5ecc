package testwait

import (
	"context"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestUntil(t *testing.T) {
	var n atomic.Int32
	if err := Until(t.Context(), "three polls", func() bool { return n.Add(1) >= 3 }); err != nil {
		t.Fatalf("Until: got %v, want nil", err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 50*time.Millisecond)
	defer cancel()
	if err := Until(ctx, "never", func() bool { return false }); err == nil {
		t.Fatal("Until of a condition that never holds: got nil, want an error")
	}
}

func TestEventually(t *testing.T) {
	start := time.Now()
	Eventually(t, 5*time.Second, "a later time", func() bool { return time.Since(start) > 3*Interval })
}
