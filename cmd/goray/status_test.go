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
	if _, err := rpc.NewHeadClient(cc).CreatePlacementGroup(ctx, &pb.CreatePlacementGroupRequest{
		PlacementGroupId: pg[:], Name: "too-big", Strategy: pb.PlacementStrategy_PLACEMENT_STRATEGY_STRICT_PACK,
		Bundles: []*pb.Resources{{Amounts: map[string]float64{"gpu": 4}}},
	}); err != nil {
		t.Fatal(err)
	}
	if _, err := rpc.NewHeadClient(cc).GetPlacementGroup(ctx, &pb.GetPlacementGroupRequest{PlacementGroupId: pg[:], Wait: true}); err != nil {
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

// TestStatusHeadAndJoinedNode checks that `goray status` marks the head's
// own node as the head and a joined node as not, and that a raylet's
// address serves as well as the head's.
func TestStatusHeadAndJoinedNode(t *testing.T) {
	ctx := context.Background()
	hc := embed.Config{Head: true}
	hc.Resources = map[string]float64{"CPU": 1}
	head, err := embed.Start(ctx, hc)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(head.Close)
	jc := embed.Config{}
	jc.Address, jc.Token = head.Address(), head.Token()
	jc.Resources = map[string]float64{"CPU": 1}
	joined, err := embed.Start(ctx, jc)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(joined.Close)

	for _, addr := range []string{head.Address(), joined.Address()} {
		t.Run(addr, func(t *testing.T) {
			var out bytes.Buffer
			cfg := StatusConfig{Address: addr, Token: head.Token()}
			if err := cfg.Validate(); err != nil {
				t.Fatal(err)
			}
			if err := Status(ctx, cfg, &out); err != nil {
				t.Fatalf("goray status --address %s: %v", addr, err)
			}
			for node, want := range map[string]string{
				head.Node().NodeID().String():   "true",
				joined.Node().NodeID().String(): "false",
			} {
				if got := headColumn(t, out.String(), node); got != want {
					t.Errorf("node %s: got HEAD %q, want %q:\n%s", node, got, want, out.String())
				}
			}
		})
	}
}

// headColumn is the HEAD column of node's row in `goray status` output.
func headColumn(t *testing.T, out, node string) string {
	t.Helper()
	for _, line := range strings.Split(out, "\n") {
		if f := strings.Fields(line); len(f) >= 4 && f[0] == node {
			return f[3]
		}
	}
	t.Fatalf("goray status output has no row for node %s:\n%s", node, out)
	return ""
}

// The CLI takes the token from a file or the environment, never from its
// command line, where every user of the machine could read it.
func TestNoTokenOnTheCommandLine(t *testing.T) {
	ctx := context.Background()
	hc := embed.Config{Head: true}
	hc.Resources = map[string]float64{"CPU": 1}
	head, err := embed.Start(ctx, hc)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(head.Close)
	for _, cmd := range [][]string{
		{"status", "--address", head.Address(), "--token", head.Token()},
		{"deploy", "--namespace", "x", "--token", head.Token(), "bin"},
		{"bench", "--token", head.Token()},
	} {
		err := run(ctx, cmd, new(bytes.Buffer))
		if err == nil || !strings.Contains(err.Error(), "GORAY_TOKEN") || strings.Contains(err.Error(), head.Token()) {
			t.Errorf("goray %s --token …: got %v, want it refused, saying where the token goes instead", cmd[0], err)
		}
	}
	var out bytes.Buffer
	if err := run(ctx, []string{"status", "--address", head.Address(), "--token-file", head.TokenFile()}, &out); err != nil {
		t.Fatalf("goray status --token-file: %v", err)
	}
	if !strings.Contains(out.String(), "alive") {
		t.Errorf("goray status --token-file: got %q, want the cluster's nodes", out.String())
	}
}
