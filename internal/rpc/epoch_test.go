package rpc

import (
	"context"
	"testing"

	"google.golang.org/grpc/metadata"
)

func TestEpochFence(t *testing.T) {
	in := func(epoch int64) context.Context {
		md, _ := metadata.FromOutgoingContext(WithEpoch(context.Background(), epoch))
		return metadata.NewIncomingContext(context.Background(), md)
	}
	var f EpochFence
	steps := []struct {
		name    string
		observe int64 // a response header's epoch, before the command
		epoch   int64 // the command's
		want    bool
	}{
		{"no epoch (a single head)", 0, 0, true},
		{"first term", 0, 4, true},
		{"same term again", 0, 4, true},
		{"a newer term", 0, 7, true},
		{"the deposed term after the newer one", 0, 4, false},
		{"no epoch still passes", 0, 0, true},
		{"a term learnt from a heartbeat", 9, 7, false},
		{"that term", 0, 9, true},
	}
	for _, s := range steps {
		if s.observe > 0 {
			f.Observe(s.observe)
		}
		if ok, got, cur := f.Check(in(s.epoch)); ok != s.want {
			t.Errorf("%s: Check(epoch %d): got %t (got %d, current %d), want %t", s.name, s.epoch, ok, got, cur, s.want)
		}
	}
}
