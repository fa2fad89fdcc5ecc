package store

import (
	"bufio"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/goray/goray/internal/testwait"
)

// gone says process pid exited (it is missing, or a zombie nobody reaped
// yet).
func gone(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return true
	}
	i := strings.LastIndexByte(string(b), ')')
	return i < 0 || i+2 >= len(b) || b[i+2] == 'Z'
}

func makeTree(t *testing.T, dir string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Join(dir, "sub"), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "sub", "f"), []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
}

// TestReaperOutlivesSIGKILL: a process that started a reaper is SIGKILLed;
// the reaper removes its directory and exits.
func TestReaperOutlivesSIGKILL(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "owned")
	makeTree(t, dir)
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), envReaperHolder+"="+dir)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	defer stdin.Close()
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	var reaper int
	line, err := bufio.NewReader(stdout).ReadString('\n')
	if _, serr := fmt.Sscanf(line, "reaper %d", &reaper); err != nil || serr != nil {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		t.Fatalf("holder said %q (%v), want its reaper's pid", line, err)
	}
	t.Cleanup(func() { _ = syscall.Kill(reaper, syscall.SIGKILL) }) // only if the test failed
	if gone(reaper) {
		t.Fatalf("reaper %d: got gone while its holder lives, want running", reaper)
	}
	if _, err := os.Stat(dir); err != nil {
		t.Fatalf("dir while the holder lives: got %v, want it there", err)
	}
	// SIGKILL to the holder's whole process group: the reaper, in a session
	// of its own, is not in it.
	if err := syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	_ = cmd.Wait()
	testwait.Eventually(t, 10*time.Second, "directory removed by the reaper", func() bool {
		_, err := os.Stat(dir)
		return os.IsNotExist(err)
	})
	testwait.Eventually(t, 10*time.Second, "reaper exit", func() bool { return gone(reaper) })
}

// TestReaperClose: Close wakes the reaper, which exits, having removed
// what its owner left.
func TestReaperClose(t *testing.T) {
	base := t.TempDir()
	removed, left := filepath.Join(base, "removed"), filepath.Join(base, "left")
	makeTree(t, removed)
	makeTree(t, left)
	r, err := StartReaper(removed, left)
	if err != nil {
		t.Fatal(err)
	}
	pid := r.Pid()
	if err := os.RemoveAll(removed); err != nil { // the owner's own cleanup
		t.Fatal(err)
	}
	if err := r.Close(); err != nil {
		t.Fatalf("Close: got %v, want nil", err)
	}
	if !gone(pid) {
		t.Fatalf("reaper %d after Close: got running, want exited", pid)
	}
	if _, err := os.Stat(left); !os.IsNotExist(err) {
		t.Fatalf("%s after Close: got %v, want removed", left, err)
	}
	if _, err := StartReaper("relative/path"); err == nil {
		t.Fatal("StartReaper(relative path): got nil error, want one")
	}
}
