package raylet

import (
	"context"
	"errors"
	"log/slog"
	"strings"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/goray/goray/internal/errs"
	"github.com/goray/goray/internal/ids"
	"github.com/goray/goray/internal/rpc"
	pb "github.com/goray/goray/proto/goray/v1"
)

// fakeRegistry answers ReportUnreachable from a fixed verdict and records
// the reports.
type fakeRegistry struct {
	pb.NodeRegistryServiceClient // unused methods panic
	dead                         bool
	err                          error
	reports                      []*pb.ReportUnreachableRequest
}

func (f *fakeRegistry) ReportUnreachable(_ context.Context, req *pb.ReportUnreachableRequest, _ ...grpc.CallOption) (*pb.ReportUnreachableResponse, error) {
	f.reports = append(f.reports, req)
	if f.err != nil {
		return nil, f.err
	}
	return &pb.ReportUnreachableResponse{Dead: f.dead}, nil
}

func TestPullUnreachableReportsTheHolderAndMarksItDead(t *testing.T) {
	holder, other := ids.NewNodeID(), ids.NewNodeID()
	table := []*pb.NodeInfo{
		{NodeId: holder[:], Address: "127.0.0.1:2", Alive: true},
		{NodeId: other[:], Address: "127.0.0.1:3", Alive: true},
	}
	loc := &pb.ObjectLocation{NodeId: holder[:], RayletAddress: "127.0.0.1:2"}
	obj := ids.NewTaskID(ids.JobIDFromUint32(1)).ObjectID(1)
	refused := errs.FromStatus(status.Error(codes.Unavailable, "connection refused"))
	for _, tc := range []struct {
		name       string
		reg        *fakeRegistry
		err        error
		wantReport bool
		wantKind   error
		wantDead   bool
		wantText   string
	}{
		{"head declares it dead", &fakeRegistry{dead: true}, refused, true, errs.ErrObjectLost, true, "is gone (the head declared its node dead)"},
		{"head holds it alive", &fakeRegistry{}, refused, true, errs.ErrObjectLost, false, "cannot be reached"},
		{"head unreachable", &fakeRegistry{err: refused}, refused, true, errs.ErrObjectLost, false, "cannot be reached"},
		{"holder answered", &fakeRegistry{dead: true}, errs.New(errs.KindObjectLost, "", "not in the store"), false, errs.ErrObjectLost, false, "not in the store"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := &Raylet{log: slog.New(slog.DiscardHandler), view: newClusterView(), head: &rpc.HeadClient{NodeRegistryServiceClient: tc.reg}}
			r.view.set(table)
			before, _ := r.view.snapshot()
			err := r.pullUnreachable(t.Context(), obj, loc, tc.err)
			if !errors.Is(err, tc.wantKind) || !strings.Contains(err.Error(), tc.wantText) {
				t.Fatalf("got %v, want %v saying %q", err, tc.wantKind, tc.wantText)
			}
			if got := len(tc.reg.reports) == 1; got != tc.wantReport {
				t.Fatalf("reported to the head: got %t, want %t", got, tc.wantReport)
			}
			if tc.wantReport && string(tc.reg.reports[0].GetNodeId()) != string(holder[:]) {
				t.Fatalf("reported node %x, want the holder %s", tc.reg.reports[0].GetNodeId(), holder)
			}
			if got := r.view.node(holder).GetAlive(); got == tc.wantDead {
				t.Fatalf("holder alive in the view: got %t, want %t", got, !tc.wantDead)
			}
			if !r.view.node(other).GetAlive() {
				t.Fatal("another node was marked dead")
			}
			if !before[0].GetAlive() {
				t.Fatal("marking the node dead changed an earlier snapshot of the table")
			}
		})
	}
}
