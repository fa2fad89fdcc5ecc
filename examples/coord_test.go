package examples_test

import (
	"bytes"
	"context"
	"os/exec"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/goray/goray/internal/testcluster"
)

// TestConfig runs examples/config: its output is exactly its README's.
func TestConfig(t *testing.T) {
	want := readmeOutput(t, "config")
	res := run(t, build(t, "config"))
	if got := lines(res.stdout); !slices.Equal(got, want) {
		t.Fatalf("config stdout: got %q, want exactly %q (config/README.md)", got, want)
	}
}

var lockDelayRE = regexp.MustCompile(`^the next holder got the lock ([0-9.]+)s after the kill \(session TTL (\d+)s\)$`)

// TestLock runs examples/lock: its output has the README's lines (the
// hand-over delay varies; it is logged).
func TestLock(t *testing.T) {
	want := readmeOutput(t, "lock")
	res := run(t, build(t, "lock"))
	got := lines(res.stdout)
	if len(got) != len(want) {
		t.Fatalf("lock stdout: got %q, want lines like %q (lock/README.md)", got, want)
	}
	for i := range want {
		if lockDelayRE.MatchString(want[i]) {
			m := lockDelayRE.FindStringSubmatch(got[i])
			if m == nil {
				t.Fatalf("lock stdout line %d: got %q, want one like %q", i, got[i], want[i])
			}
			t.Logf("lock: the next holder got the lock %ss after the kill (session TTL %ss)", m[1], m[2])
			continue
		}
		if got[i] != want[i] {
			t.Fatalf("lock stdout line %d: got %q, want %q", i, got[i], want[i])
		}
	}
	if !strings.Contains(res.stdout, "rejected") {
		t.Fatalf("lock stdout: got %q, want the stale write rejected", res.stdout)
	}
}

// TestConfigOnACluster runs examples/config against a cluster of two raylet
// processes (GORAY_ADDRESS set): its output is the README's, and its three
// actors watch the tree from both nodes.
func TestConfigOnACluster(t *testing.T) {
	ex := build(t, "config")
	raylet := buildRaylet(t)
	c := testcluster.StartProcesses(t, raylet, map[string]float64{"CPU": 2})
	c.Join("second", `{"CPU":2}`)
	ctx, cancel := context.WithTimeout(t.Context(), runTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, ex.bin)
	cmd.Env = append(testcluster.CleanEnv(), "GORAY_ADDRESS="+c.Address(), "GORAY_TOKEN_FILE="+c.TokenFile)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("config against the cluster: %v\nstdout:\n%s\nstderr:\n%s", err, stdout.String(), stderr.String())
	}
	if got, want := lines(stdout.String()), readmeOutput(t, "config"); !slices.Equal(got, want) {
		t.Fatalf("config stdout against the cluster: got %q, want exactly %q (config/README.md)", got, want)
	}
	if !strings.Contains(stderr.String(), "config: 3 actors on 2 node(s)") {
		t.Fatalf("config against a two-node cluster: want its actors on both nodes; stderr:\n%s", stderr.String())
	}
}
