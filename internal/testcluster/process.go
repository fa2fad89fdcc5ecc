package testcluster

// Process helpers of the multi-process tier (moved here from tests/e2e):
// starting a program as a process group that is always stopped, even when
// the test fails; waiting for a line of its output; and scanning /proc for
// processes a test left behind.

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/goray/goray/internal/testwait"
)

// Bounds of the helpers (not assertions on speed: they only turn a hang into
// a failure).
const (
	// ReadyTimeout bounds the wait for a raylet's ready line.
	ReadyTimeout = 30 * time.Second
	// StopTimeout is how long a process may take to exit after SIGTERM
	// before it gets SIGKILL.
	StopTimeout = 15 * time.Second
	// LeakTimeout is how long leftover processes may take to disappear
	// after a test.
	LeakTimeout = 5 * time.Second
)

// LineBuffer collects a process's output and lets a test wait for a line.
type LineBuffer struct {
	mu      sync.Mutex
	all     bytes.Buffer
	partial []byte
	lines   []string
	changed chan struct{} // closed and replaced on every new line
}

// NewLineBuffer returns an empty LineBuffer.
func NewLineBuffer() *LineBuffer { return &LineBuffer{changed: make(chan struct{})} }

// Write appends p, splitting it into lines.
func (b *LineBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.all.Write(p)
	b.partial = append(b.partial, p...)
	added := false
	for {
		i := bytes.IndexByte(b.partial, '\n')
		if i < 0 {
			break
		}
		b.lines = append(b.lines, string(b.partial[:i]))
		b.partial = b.partial[i+1:]
		added = true
	}
	if added {
		close(b.changed)
		b.changed = make(chan struct{})
	}
	return len(p), nil
}

// String is everything written so far.
func (b *LineBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.all.String()
}

// Find returns the first complete line that match accepts, and a channel
// closed when more lines arrive.
func (b *LineBuffer) Find(match func(string) bool) (string, bool, <-chan struct{}) {
	b.mu.Lock()
	defer b.mu.Unlock()
	for _, l := range b.lines {
		if match(l) {
			return l, true, nil
		}
	}
	return "", false, b.changed
}

// Proc is a process a test started in its own process group; it is stopped
// (SIGTERM, then SIGKILL, to the group) and waited for by t.Cleanup, and its
// output is logged when the test failed.
type Proc struct {
	t    testing.TB
	name string
	cmd  *exec.Cmd
	// Stdin is the process's standard input; nil unless asked for.
	Stdin io.WriteCloser
	// Stdout and Stderr collect the process's output.
	Stdout, Stderr *LineBuffer
	done           chan struct{} // closed when the process was waited for
	err            error         // Wait's error; read after done
}

// CleanEnv is the test's environment without goray variables, so that a
// developer's GORAY_ADDRESS or GORAY_TOKEN never reaches a child.
func CleanEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "GORAY_") && !strings.HasPrefix(kv, "E2E_") {
			env = append(env, kv)
		}
	}
	return env
}

// StartProc starts path with args and CleanEnv plus env in its own process
// group; name is how failures call it.
func StartProc(t testing.TB, name, path string, args, env []string, withStdin bool) *Proc {
	t.Helper()
	cmd := exec.Command(path, args...)
	cmd.Env = append(CleanEnv(), env...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.WaitDelay = 5 * time.Second
	p := &Proc{t: t, name: name, cmd: cmd, Stdout: NewLineBuffer(), Stderr: NewLineBuffer(), done: make(chan struct{})}
	cmd.Stdout, cmd.Stderr = p.Stdout, p.Stderr
	if withStdin {
		w, err := cmd.StdinPipe()
		if err != nil {
			t.Fatalf("%s: stdin pipe: %v", name, err)
		}
		p.Stdin = w
	}
	if err := cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", name, err)
	}
	go func() {
		p.err = cmd.Wait()
		close(p.done)
	}()
	t.Cleanup(func() {
		p.Stop()
		if t.Failed() {
			t.Logf("%s (pid %d, %s) stdout:\n%s", name, p.Pid(), p.ExitDesc(), Tail(p.Stdout.String()))
			t.Logf("%s (pid %d) stderr:\n%s", name, p.Pid(), Tail(p.Stderr.String()))
		}
	})
	return p
}

// Tail is the last 8 KiB of s.
func Tail(s string) string {
	const max = 8 << 10
	if len(s) > max {
		return "..." + s[len(s)-max:]
	}
	return s
}

// Name is how failures call the process.
func (p *Proc) Name() string { return p.name }

// Pid is the process's ID (and its process group's).
func (p *Proc) Pid() int { return p.cmd.Process.Pid }

// Exited reports whether the process exited and was waited for.
func (p *Proc) Exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// Stop ends the process group: SIGTERM, then SIGKILL after StopTimeout, and
// waits for the process. It is idempotent.
func (p *Proc) Stop() {
	if p.Stdin != nil {
		p.Stdin.Close()
	}
	pgid := p.Pid()
	if !p.Exited() {
		_ = syscall.Kill(-pgid, syscall.SIGTERM)
		select {
		case <-p.done:
		case <-time.After(StopTimeout):
			p.t.Errorf("%s (pid %d): got still running %s after SIGTERM, want exited; sending SIGKILL", p.name, pgid, StopTimeout)
		}
	}
	// Anything left in the group (the leader may have exited before its
	// children) is killed too.
	_ = syscall.Kill(-pgid, syscall.SIGKILL)
	<-p.done
}

// Kill sends SIGKILL to the whole process group and waits for the process.
func (p *Proc) Kill(t testing.TB) {
	t.Helper()
	if err := syscall.Kill(-p.Pid(), syscall.SIGKILL); err != nil && !p.Exited() {
		t.Fatalf("%s: kill -KILL -%d: %v", p.name, p.Pid(), err)
	}
	p.Wait(t, StopTimeout)
}

// Signal sends sig to the process (not its group).
func (p *Proc) Signal(t testing.TB, sig syscall.Signal) {
	t.Helper()
	if err := syscall.Kill(p.Pid(), sig); err != nil {
		t.Fatalf("%s: kill -%d %d: %v", p.name, sig, p.Pid(), err)
	}
}

// Wait waits up to d for the process to exit and returns Wait's error; it
// fails t when the process is still running.
func (p *Proc) Wait(t testing.TB, d time.Duration) error {
	t.Helper()
	select {
	case <-p.done:
		return p.err
	case <-time.After(d):
		t.Fatalf("%s (pid %d): got still running after %s, want exited", p.name, p.Pid(), d)
		return nil
	}
}

// ExitCode is the exit status after the process was waited for, or -1 when
// a signal ended it.
func (p *Proc) ExitCode() int { return p.cmd.ProcessState.ExitCode() }

// ExitDesc says how the process ended, or "running".
func (p *Proc) ExitDesc() string {
	if !p.Exited() {
		return "running"
	}
	return p.cmd.ProcessState.String()
}

// WaitLine waits up to d for a stdout line that match accepts; it fails t
// when none comes.
func (p *Proc) WaitLine(t testing.TB, d time.Duration, what string, match func(string) bool) string {
	t.Helper()
	timer := time.NewTimer(d)
	defer timer.Stop()
	for {
		line, ok, changed := p.Stdout.Find(match)
		if ok {
			return line
		}
		select {
		case <-changed:
		case <-p.done:
			if line, ok, _ := p.Stdout.Find(match); ok {
				return line
			}
			t.Fatalf("%s: got exit (%s) before %s, want %s\nstderr:\n%s", p.name, p.ExitDesc(), what, what, Tail(p.Stderr.String()))
		case <-timer.C:
			t.Fatalf("%s: got no %s within %s, want one\nstdout:\n%s\nstderr:\n%s", p.name, what, d, Tail(p.Stdout.String()), Tail(p.Stderr.String()))
		}
	}
}

// ProcInfo is a process found in /proc.
type ProcInfo struct {
	Pid     int
	Cmdline []string
	Env     map[string]string // filled only by callers that read it (ReadEnviron)
}

func (p ProcInfo) String() string {
	return fmt.Sprintf("pid %d: %s", p.Pid, strings.Join(p.Cmdline, " "))
}

// ScanProcs lists the live processes (not zombies, not this one) for which
// keep holds.
func ScanProcs(keep func(pid int, cmdline []string) bool) []ProcInfo {
	entries, _ := os.ReadDir("/proc")
	self := os.Getpid()
	var out []ProcInfo
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == self {
			continue
		}
		raw, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if err != nil || len(raw) == 0 { // gone, a kernel thread or a zombie
			continue
		}
		cmdline := strings.Split(strings.TrimRight(string(raw), "\x00"), "\x00")
		if keep(pid, cmdline) {
			out = append(out, ProcInfo{Pid: pid, Cmdline: cmdline})
		}
	}
	return out
}

// Mentioning lists the processes whose command line mentions any of subs.
func Mentioning(subs ...string) []ProcInfo {
	return ScanProcs(func(_ int, cmdline []string) bool {
		joined := strings.Join(cmdline, " ")
		return slices.ContainsFunc(subs, func(s string) bool { return strings.Contains(joined, s) })
	})
}

// ReadEnviron reads a process's environment; nil when it is unreadable.
func ReadEnviron(pid int) map[string]string {
	raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/environ", pid))
	if err != nil {
		return nil
	}
	env := map[string]string{}
	for _, kv := range strings.Split(string(raw), "\x00") {
		if k, v, ok := strings.Cut(kv, "="); ok {
			env[k] = v
		}
	}
	return env
}

// CheckNoLeaks fails t when, LeakTimeout after its processes were stopped,
// a process still mentions any of subs (the built binaries' directory, the
// test's directory under which raylets keep the job binaries their workers
// run from). Leftovers are SIGKILLed so they cannot disturb later tests.
func CheckNoLeaks(t testing.TB, subs ...string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), LeakTimeout)
	defer cancel()
	var left []ProcInfo
	_ = testwait.Until(ctx, "no leftover processes", func() bool {
		left = Mentioning(subs...)
		return len(left) == 0
	})
	if len(left) == 0 {
		return
	}
	t.Errorf("processes left %s after the test: got %d:\n%s\nwant none", LeakTimeout, len(left), FmtProcs(left))
	for _, p := range left {
		_ = syscall.Kill(p.Pid, syscall.SIGKILL)
	}
}

// FmtProcs lists ps one a line.
func FmtProcs(ps []ProcInfo) string {
	var b strings.Builder
	for _, p := range ps {
		fmt.Fprintf(&b, "  %s\n", p)
	}
	return b.String()
}
