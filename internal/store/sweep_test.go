package store

import (
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"testing"
)

func TestSweep(t *testing.T) {
	base := t.TempDir()
	mine := filepath.Join(base, "store-mine")
	dead := filepath.Join(base, "store-dead")
	unclaimed := filepath.Join(base, "store-unclaimed")
	other := filepath.Join(base, "data-dead")
	for _, d := range []string{mine, dead, unclaimed, other} {
		if err := os.Mkdir(d, 0o700); err != nil {
			t.Fatal(err)
		}
	}
	if err := Claim(mine); err != nil {
		t.Fatal(err)
	}
	// A process that has exited owns dead and other.
	cmd := exec.Command("true")
	if err := cmd.Run(); err != nil {
		t.Fatal(err)
	}
	for _, d := range []string{dead, other} {
		if err := os.WriteFile(filepath.Join(d, ownerFile), []byte(
			func() string { return itoa(cmd.Process.Pid) + " 1\n" }()), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	got := Sweep(base, "store-")
	if !slices.Equal(got, []string{dead}) {
		t.Fatalf("swept %v, want only %s", got, dead)
	}
	for _, d := range []string{mine, unclaimed, other} {
		if _, err := os.Stat(d); err != nil {
			t.Fatalf("%s: got %v, want it kept", d, err)
		}
	}
}

func itoa(n int) string { return strconv.Itoa(n) }
