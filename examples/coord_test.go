package examples_test

import (
	"regexp"
	"slices"
	"strings"
	"testing"
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
