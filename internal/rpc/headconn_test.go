package rpc

import (
	"context"
	"net"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/goray/goray/internal/errs"
)

// fakeHead answers Check as a leader (ok), a standby (refusal naming
// leader) or a leader that answers with a goray error kind.
type fakeHead struct {
	healthpb.UnimplementedHealthServer
	leader string // a standby names it
	kind   bool   // answer an ErrorInfo-carrying Unavailable (a node died)
	calls  int
}

func (f *fakeHead) Check(ctx context.Context, _ *healthpb.HealthCheckRequest) (*healthpb.HealthCheckResponse, error) {
	f.calls++
	switch {
	case f.kind:
		return nil, errs.New(errs.KindNodeDied, "", "the node died")
	case f.leader != "":
		_ = grpc.SetTrailer(ctx, metadata.Pairs(LeaderTrailer, f.leader))
		return nil, status.Errorf(codes.Unavailable, "a standby; the leader is %s", f.leader)
	}
	return &healthpb.HealthCheckResponse{Status: healthpb.HealthCheckResponse_SERVING}, nil
}

func serveFake(t *testing.T, f *fakeHead) string {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer(ServerOptions("")...)
	healthpb.RegisterHealthServer(srv, f)
	go srv.Serve(lis)
	t.Cleanup(srv.Stop)
	return lis.Addr().String()
}

func TestHeadConnFollowsTheLeader(t *testing.T) {
	leader := &fakeHead{}
	la := serveFake(t, leader)
	standby := &fakeHead{leader: la}
	sa := serveFake(t, standby)
	// A dead head first, then the standby: the dead one is skipped without
	// a call (its connection fails), and the standby's refusal goes to the
	// leader at once.
	dead, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	da := dead.Addr().String()
	dead.Close()
	hc, err := DialHead(da+","+sa, "")
	if err != nil {
		t.Fatal(err)
	}
	defer hc.Close()
	c := healthpb.NewHealthClient(hc)
	if _, err := c.Check(t.Context(), &healthpb.HealthCheckRequest{}); err != nil {
		t.Fatalf("a call with a dead head listed first: got %v, want it answered by the leader the standby names", err)
	}
	if got := hc.Target(); got != la {
		t.Errorf("Target after the redirection: got %s, want the leader %s", got, la)
	}
	if standby.calls != 1 || leader.calls != 1 {
		t.Errorf("calls: got standby %d, leader %d; want 1 and 1", standby.calls, leader.calls)
	}
	// A goray error kind that maps to Unavailable is the leader's answer:
	// returned as it is, and the connection stays.
	leader.kind = true
	if _, err := c.Check(t.Context(), &healthpb.HealthCheckRequest{}); err == nil || HeadUnreachable(err) {
		t.Errorf("a node-died answer: got %v, want that error, not an unreachable head", err)
	}
	if got := hc.Target(); got != la {
		t.Errorf("Target after a goray error: got %s, want still the leader %s", got, la)
	}
}

func TestDialHeadNeedsAnAddress(t *testing.T) {
	for _, list := range []string{"", " , ,"} {
		if _, err := DialHead(list, ""); err == nil {
			t.Errorf("DialHead(%q): got nil error, want one", list)
		}
	}
	if got := SplitAddresses(" a:1, b:2,a:1,,"); len(got) != 2 || got[0] != "a:1" || got[1] != "b:2" {
		t.Errorf(`SplitAddresses: got %q, want ["a:1" "b:2"]`, got)
	}
}

func TestHeadConnEveryHeadDown(t *testing.T) {
	var addrs []string
	for range 2 {
		lis, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		addrs = append(addrs, lis.Addr().String())
		lis.Close()
	}
	hc, err := DialHead(addrs[0]+","+addrs[1], "")
	if err != nil {
		t.Fatal(err)
	}
	defer hc.Close()
	_, err = healthpb.NewHealthClient(hc).Check(t.Context(), &healthpb.HealthCheckRequest{})
	if !HeadUnreachable(err) {
		t.Errorf("every head down: got %v, want an unreachable head", err)
	}
}
