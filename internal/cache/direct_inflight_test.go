package cache

import (
	"errors"
	"testing"

	"github.com/goray/goray/internal/errs"
)

// An operation whose data path stream broke in flight goes again as an
// actor call only when running it twice does no harm; otherwise it fails,
// at most once, saying it may have been applied.
func TestSettleInFlight(t *testing.T) {
	s := &shardRef{}
	for _, op := range []Op{OpGet, OpSet, OpStats, OpConfigure, OpPing, OpRenew} {
		if _, ok, err := settleInFlight(s, Request{Op: op}, Reply{}, false, errInFlight); ok || err != nil {
			t.Errorf("%s in flight: got ok %v, %v; want it sent again as an actor call", op, ok, err)
		}
	}
	for _, op := range []Op{OpIncr, OpCAS, OpUpdate, OpDelete, OpAcquire, OpFulfill, OpAbandon} {
		_, ok, err := settleInFlight(s, Request{Op: op}, Reply{}, false, errInFlight)
		if !ok || !errors.Is(err, errs.ErrWorkerCrashed) {
			t.Errorf("%s in flight: got ok %v, %v; want ErrWorkerCrashed, not run again", op, ok, err)
		}
	}
	want := Reply{Code: CodeHit}
	if r, ok, err := settleInFlight(s, Request{Op: OpIncr}, want, true, nil); !ok || err != nil || r.Code != CodeHit {
		t.Errorf("an answered operation: got %v, %v, %v; want it unchanged", r, ok, err)
	}
}
