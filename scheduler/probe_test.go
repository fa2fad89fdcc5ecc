package scheduler

import (
	"context"
	"errors"
	"net"
	"slices"
	"strings"
	"testing"

	"github.com/goray/goray/internal/errs"
	"github.com/goray/goray/internal/ids"
	pb "github.com/goray/goray/proto/goray/v1"
)

// refusedAddr is a loopback address where nothing listens: a connection to
// it is refused.
func refusedAddr(t *testing.T) string {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := lis.Addr().String()
	lis.Close()
	return addr
}

// listeningAddr is a loopback address that accepts connections (and never
// answers on them) until the test ends.
func listeningAddr(t *testing.T) string {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { lis.Close() })
	return lis.Addr().String()
}

func (f *nodeFixture) report(t *testing.T, id ids.NodeID) (*pb.ReportUnreachableResponse, error) {
	t.Helper()
	return f.m.reportUnreachable(&pb.ReportUnreachableRequest{NodeId: id[:], Address: "127.0.0.1:1"})
}

func (f *nodeFixture) deadNodes() []ids.NodeID {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.dead)
}

// A report only triggers the head's own probe: the node is declared dead
// when its raylet refuses the head too, never when it accepts or is slow.
func TestReportUnreachableDeclaresDeadOnlyOnARefusal(t *testing.T) {
	for _, tc := range []struct {
		name     string
		addr     func(t *testing.T) string
		probe    func(ctx context.Context, addr string) error // nil: the real TCP probe
		wantDead bool
	}{
		{"refused", refusedAddr, nil, true},
		{"accepts", listeningAddr, nil, false},
		{"times out", listeningAddr, func(ctx context.Context, _ string) error {
			<-ctx.Done() // a raylet that does not complete the handshake
			return ctx.Err()
		}, false},
		{"other error", listeningAddr, func(context.Context, string) error { return errors.New("no route to host") }, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newNodeFixture(t)
			if tc.probe != nil {
				f.m.probe = tc.probe
			}
			addr := tc.addr(t)
			id := f.register(t, addr, 2)
			other := f.register(t, listeningAddr(t), 2)
			resp, err := f.report(t, id)
			if err != nil {
				t.Fatalf("report: %v", err)
			}
			if resp.GetDead() != tc.wantDead {
				t.Fatalf("report answered dead=%t, want %t", resp.GetDead(), tc.wantDead)
			}
			alive := map[ids.NodeID]bool{}
			for _, n := range f.m.aliveNodes() {
				alive[n.ID] = true
			}
			if alive[id] == tc.wantDead || !alive[other] {
				t.Fatalf("after the report: node alive %t, other node alive %t; want %t, true", alive[id], alive[other], !tc.wantDead)
			}
			var wantDeadIDs []ids.NodeID
			if tc.wantDead {
				wantDeadIDs = []ids.NodeID{id}
				if !slices.Equal(f.dropped, []string{addr}) {
					t.Errorf("dropped connections: got %v, want [%s]", f.dropped, addr)
				}
			}
			if got := f.deadNodes(); !slices.Equal(got, wantDeadIDs) {
				t.Fatalf("nodes reported dead to the actor manager: got %v, want %v", got, wantDeadIDs)
			}
			// A second report of a dead node answers from the table.
			if tc.wantDead {
				f.m.probe = func(context.Context, string) error { t.Error("probed a node already dead"); return nil }
				if resp, err := f.report(t, id); err != nil || !resp.GetDead() {
					t.Fatalf("second report: got dead=%t (%v), want dead=true", resp.GetDead(), err)
				}
				if got := f.deadNodes(); len(got) != 1 {
					t.Fatalf("onDead calls after two reports: got %d, want 1", len(got))
				}
			}
		})
	}
}

func TestReportUnreachableBadInput(t *testing.T) {
	f := newNodeFixture(t)
	f.m.probe = func(context.Context, string) error { t.Error("probed on bad input"); return nil }
	id := f.register(t, "127.0.0.1:1", 1)
	unknown := ids.NewNodeID()
	for _, tc := range []struct {
		name string
		req  *pb.ReportUnreachableRequest
		want error
	}{
		{"malformed node ID", &pb.ReportUnreachableRequest{NodeId: []byte{1, 2}}, errs.ErrInvalidArgument},
		{"address too long", &pb.ReportUnreachableRequest{NodeId: id[:], Address: strings.Repeat("a", maxReportAddress+1)}, errs.ErrInvalidArgument},
		{"unknown node", &pb.ReportUnreachableRequest{NodeId: unknown[:]}, errs.ErrNotFound},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := f.m.reportUnreachable(tc.req); !errors.Is(err, tc.want) {
				t.Fatalf("got %v, want %v", err, tc.want)
			}
		})
	}
	if len(f.m.aliveNodes()) != 1 {
		t.Fatal("bad reports changed the node table")
	}
}
