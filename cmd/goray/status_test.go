package main

import (
	"bytes"
	"context"
	"strings"
	"testing"

	"github.com/goray/goray/internal/embed"
	"github.com/goray/goray/internal/ids"
	"github.com/goray/goray/internal/rpc"
	pb "github.com/goray/goray/proto/goray/v1"
)

// TestStatus runs `goray status` against a real head and checks that it
// lists the node and a placement group no node can fit.
func TestStatus(t *testing.T) {
	ctx := context.Background()
	hc := embed.Config{Head: true}
	hc.Resources = map[string]float64{"CPU": 2}
	head, err := embed.Start(ctx, hc)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(head.Close)
	cc, err := rpc.Dial(head.Address(), head.Token())
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	pg := ids.NewPlacementGroupID(ids.JobIDFromUint32(7))
	if _, err := pb.NewSchedulerServiceClient(cc).CreatePlacementGroup(ctx, &pb.CreatePlacementGroupRequest{
		PlacementGroupId: pg[:], Name: "too-big", Strategy: pb.PlacementStrategy_PLACEMENT_STRATEGY_STRICT_PACK,
		Bundles: []*pb.Resources{{Amounts: map[string]float64{"gpu": 4}}},
	}); err != nil {
		t.Fatal(err)
	}
	if _, err := pb.NewSchedulerServiceClient(cc).GetPlacementGroup(ctx, &pb.GetPlacementGroupRequest{PlacementGroupId: pg[:], Wait: true}); err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	cfg := StatusConfig{Address: head.Address(), Token: head.Token()}
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	if err := Status(ctx, cfg, &out); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{head.Node().NodeID().String(), "alive", "CPU 2/2", "placement groups: infeasible 1", `placement_group too-big`, `"gpu"`} {
		if !strings.Contains(out.String(), want) {
			t.Fatalf("goray status output lacks %q:\n%s", want, out.String())
		}
	}
	// A wrong token is refused with a clear error.
	cfg.Token = "wrong"
	if err := Status(ctx, cfg, &out); err == nil || !strings.Contains(err.Error(), "token") {
		t.Fatalf("status with a wrong token: got %v, want an error about the token", err)
	}
}
