package errs

import (
	"strings"
	"testing"
)

// Input echoed in an error is quoted up to a bound: a 1 MiB name gives a
// short message that says how long it was.
func TestNewClipsWhatItQuotes(t *testing.T) {
	huge := strings.Repeat("é", 1<<19) // 1 MiB of two-byte runes
	args := []any{huge, []byte(huge), 7}
	e := New(KindNotFound, huge, "function %q (%s) in namespace %d not found", args...)
	if len(e.Error()) > 4*MaxQuoted+200 {
		t.Fatalf("error of a 1 MiB name: %d bytes, want at most about %d", len(e.Error()), 4*MaxQuoted)
	}
	if !strings.Contains(e.Message, "(1048576 bytes in all)") || !strings.HasSuffix(e.Name, "(1048576 bytes in all)") {
		t.Errorf("clipped error: %q, want it to say how long the input was", e.Error()[:300])
	}
	if args[0] != huge {
		t.Error("New changed its caller's arguments")
	}
	if !strings.HasPrefix(e.Message, `function "é`) || strings.ContainsRune(e.Message, '\uFFFD') {
		t.Errorf("clipped message does not start with a whole prefix of the input: %q", e.Message[:40])
	}
	long := New(KindTaskFailed, "f", "%s %s %s %s %s %s %s %s %s %s %s %s %s %s %s %s %s %s %s %s %s %s %s %s %s %s %s %s %s %s %s %s %s %s %s %s",
		strs(36, strings.Repeat("x", MaxQuoted))...)
	if len(long.Message) > MaxMessage+64 {
		t.Errorf("message of many quoted parts: %d bytes, want at most %d", len(long.Message), MaxMessage)
	}
	if short := New(KindNotFound, "f", "no %s", "such"); short.Message != "no such" || short.Name != "f" {
		t.Errorf("short error changed: %+v", short)
	}
}

func strs(n int, s string) []any {
	out := make([]any, n)
	for i := range out {
		out[i] = s
	}
	return out
}
