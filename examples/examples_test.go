// Package examples_test builds every example program and runs it against an
// embedded cluster (no GORAY_ADDRESS), as CI should: each must exit 0, print
// what its README promises, and leave no worker process and no object store
// directory behind.
package examples_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/goray/goray/internal/testwait"
)

// runTimeout bounds one run of an example; leakWait how long its processes
// and store may take to go away after it exits.
const (
	runTimeout = 90 * time.Second
	leakWait   = 5 * time.Second
)

func goTool(t *testing.T) string {
	t.Helper()
	if p, err := exec.LookPath("go"); err == nil {
		return p
	}
	p := filepath.Join(runtime.GOROOT(), "bin", "go")
	if _, err := os.Stat(p); err != nil {
		t.Skipf("no go tool to build the examples with: %v", err)
	}
	return p
}

// example is one built example program.
type example struct {
	name string
	bin  string
	sum  string // hex SHA-256 of bin: raylets start workers from a copy named by it
}

func build(t *testing.T, name string) example {
	t.Helper()
	bin := filepath.Join(t.TempDir(), name)
	cmd := exec.Command(goTool(t), "build", "-o", bin, "./"+name)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build ./%s: %v\n%s", name, err, out)
	}
	data, err := os.ReadFile(bin)
	if err != nil {
		t.Fatal(err)
	}
	s := sha256.Sum256(data)
	return example{name: name, bin: bin, sum: hex.EncodeToString(s[:])}
}

// result is how one run ended.
type result struct {
	stdout, stderr string
	storeDir       string // the embedded raylet's object store, from its log
	dataDir        string
}

var (
	storeDirRE = regexp.MustCompile(`store_dir=(\S+)`)
	dataDirRE  = regexp.MustCompile(`data_dir=(\S+)`)
)

// run runs ex with args in its own process group, with no GORAY_ADDRESS, and
// fails t unless it exits 0. Whatever happens, the process group and every
// process of the example's binary are killed when t ends.
func run(t *testing.T, ex example, args ...string) result {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), runTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, ex.bin, args...)
	var env []string
	for _, kv := range os.Environ() {
		if k, _, _ := strings.Cut(kv, "="); k == "GORAY_ADDRESS" || k == "GORAY_WORKER" || k == "GORAY_LOG_LEVEL" || k == "TMPDIR" {
			continue
		}
		env = append(env, kv)
	}
	// info level makes the embedded raylet log its store and data dirs (on
	// stderr; stdout stays the program's own). A private TMPDIR keeps its
	// data dir and token file apart from anything else running.
	cmd.Env = append(env, "GORAY_LOG_LEVEL=info", "TMPDIR="+t.TempDir())
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	cmd.WaitDelay = 5 * time.Second

	start := time.Now()
	if err := cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", ex.name, err)
	}
	pgid := cmd.Process.Pid
	t.Cleanup(func() {
		_ = syscall.Kill(-pgid, syscall.SIGKILL) // ESRCH when all is well
		for _, p := range exampleProcs(ex) {
			t.Logf("cleanup: killing leftover process %d of %s", p, ex.name)
			_ = syscall.Kill(p, syscall.SIGKILL)
		}
	})
	err := cmd.Wait()
	res := result{stdout: stdout.String(), stderr: stderr.String()}
	if m := storeDirRE.FindStringSubmatch(res.stderr); m != nil {
		res.storeDir = m[1]
	}
	if m := dataDirRE.FindStringSubmatch(res.stderr); m != nil {
		res.dataDir = m[1]
	}
	if ctx.Err() != nil {
		t.Fatalf("%s %v: still running after %s (killed)\nstdout:\n%s\nstderr:\n%s", ex.name, args, runTimeout, res.stdout, res.stderr)
	}
	if err != nil {
		t.Fatalf("%s %v: got %v, want exit status 0\nstdout:\n%s\nstderr:\n%s", ex.name, args, err, res.stdout, res.stderr)
	}
	t.Logf("%s %v: exit 0 in %s", ex.name, args, time.Since(start).Round(time.Millisecond))
	checkNoLeaks(t, ex, res)
	return res
}

// exampleProcs lists live processes running ex's binary: the driver itself
// or a worker started from the raylet's copy of it (named by its SHA-256).
func exampleProcs(ex example) []int {
	ents, err := os.ReadDir("/proc")
	if err != nil {
		return nil
	}
	var pids []int
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == os.Getpid() {
			continue
		}
		exe, err := os.Readlink(filepath.Join("/proc", e.Name(), "exe"))
		if err != nil {
			continue // gone, a zombie, or not ours
		}
		exe = strings.TrimSuffix(exe, " (deleted)")
		if exe == ex.bin || filepath.Base(exe) == ex.sum {
			if isZombie(pid) {
				continue
			}
			pids = append(pids, pid)
		}
	}
	return pids
}

func isZombie(pid int) bool {
	b, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(pid), "stat"))
	if err != nil {
		return true
	}
	// The state follows the parenthesised command name.
	i := bytes.LastIndexByte(b, ')')
	return i < 0 || i+2 >= len(b) || b[i+2] == 'Z' || b[i+2] == 'X'
}

// checkNoLeaks waits up to leakWait for every process of ex to go and its
// store and data dirs to be removed.
func checkNoLeaks(t *testing.T, ex example, res result) {
	t.Helper()
	if res.storeDir == "" {
		t.Errorf("%s: the embedded raylet did not log its store_dir at info level; cannot check it is removed\nstderr:\n%s", ex.name, res.stderr)
	} else if !strings.HasPrefix(filepath.Base(res.storeDir), "store-") {
		t.Errorf("%s: store_dir %q: want a store-* directory", ex.name, res.storeDir)
	}
	var procs []int
	var dirs []string
	gone := func() bool {
		procs, dirs = exampleProcs(ex), nil
		for _, d := range []string{res.storeDir, res.dataDir} {
			if d == "" {
				continue
			}
			if _, err := os.Stat(d); !errors.Is(err, os.ErrNotExist) {
				dirs = append(dirs, d)
			}
		}
		return len(procs) == 0 && len(dirs) == 0
	}
	ctx, cancel := context.WithTimeout(context.Background(), leakWait)
	defer cancel()
	if testwait.Until(ctx, "the example's processes and directories gone", gone) != nil {
		var cmdlines []string
		for _, p := range procs {
			b, _ := os.ReadFile(filepath.Join("/proc", strconv.Itoa(p), "cmdline"))
			cmdlines = append(cmdlines, strconv.Itoa(p)+": "+strings.ReplaceAll(string(b), "\x00", " "))
		}
		t.Fatalf("%s: %s after it exited: got processes %v and dirs %v left, want none", ex.name, leakWait, cmdlines, dirs)
	}
}

func lines(s string) []string {
	s = strings.TrimRight(s, "\n")
	if s == "" {
		return nil
	}
	return strings.Split(s, "\n")
}

// readmeOutput is the block of expected output in an example's README: the
// fenced block after the line "Expected output:".
func readmeOutput(t *testing.T, name string) []string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(name, "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	_, after, ok := strings.Cut(string(b), "Expected output:")
	if !ok {
		t.Fatalf("%s/README.md: no \"Expected output:\"", name)
	}
	_, after, ok = strings.Cut(after, "```\n")
	block, _, ok2 := strings.Cut(after, "```")
	if !ok || !ok2 {
		t.Fatalf("%s/README.md: no fenced block after \"Expected output:\"", name)
	}
	return lines(block)
}

func TestQuickstart(t *testing.T) {
	ex := build(t, "quickstart")
	want := []string{
		"counter after adding 1..4: 10",
		"square(7): 49",
		"put/get: [1 2 3 4 5]",
		"sum(ref): 15",
		"square(square(3)): 81",
	}
	if got := readmeOutput(t, "quickstart"); !slices.Equal(got, want) {
		t.Fatalf("quickstart/README.md expected output: got %q, want %q", got, want)
	}
	res := run(t, ex)
	if got := lines(res.stdout); !slices.Equal(got, want) {
		t.Fatalf("quickstart stdout: got %q, want exactly %q", got, want)
	}
}

func TestChunked(t *testing.T) {
	ex := build(t, "chunked")
	const ok = "ok: the gathered result matches the dataset"
	tests := []struct {
		name      string
		args      []string
		wantLines []string // lines that must appear, besides the final ok
	}{
		{"default", nil, []string{"total: 100000 items, sum 5000050000, min 1, max 100000"}},
		{"more actors than items", []string{"-n", "3", "-actors", "5"}, []string{
			"actor 0: 1 items, sum 1", "actor 2: 1 items, sum 3", "actor 3: 0 items, sum 0", "actor 4: 0 items, sum 0",
			"total: 3 items, sum 6, min 1, max 3",
		}},
		{"empty input", []string{"-n", "0"}, []string{"total: 0 items, sum 0, min 0, max 0"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			res := run(t, ex, tc.args...)
			got := lines(res.stdout)
			if len(got) == 0 || got[len(got)-1] != ok {
				t.Fatalf("chunked %v stdout: got %q, want it to end with %q", tc.args, got, ok)
			}
			for _, w := range tc.wantLines {
				if !slices.Contains(got, w) {
					t.Errorf("chunked %v stdout: got %q, want a line %q", tc.args, got, w)
				}
			}
		})
	}
}

func TestBatch(t *testing.T) {
	ex := build(t, "batch")
	res := run(t, ex, "-jobs", "50", "-size", "20000")
	got := lines(res.stdout)
	if !slices.Contains(got, "submitted 50 tasks") {
		t.Errorf("batch stdout: got %q, want a line %q", got, "submitted 50 tasks")
	}
	if !slices.Contains(got, "progress: 50/50 tasks (100%), "+progressRate(got)) {
		t.Errorf("batch stdout: got %q, want a final progress line 50/50", got)
	}
	if len(got) == 0 || !strings.HasPrefix(got[len(got)-1], "done: 50 tasks") {
		t.Fatalf("batch stdout: got %q, want it to end with %q", got, "done: 50 tasks ...")
	}
	// primes below 20000 and below 20049 (the first and last task).
	if last := got[len(got)-1]; !strings.Contains(last, "primes below 20000: 2262, below 20049: 2267") {
		t.Errorf("batch last line: got %q, want the prime counts 2262 and 2267", last)
	}
}

// progressRate returns the rate suffix of the 50/50 progress line, so the
// check above tests its presence without pinning a timing.
func progressRate(got []string) string {
	const prefix = "progress: 50/50 tasks (100%), "
	for _, l := range got {
		if r, ok := strings.CutPrefix(l, prefix); ok {
			return r
		}
	}
	return "<missing>"
}

// TestCache runs examples/cache with its defaults: its output is exactly
// the README's (the counts are deterministic: one computation per distinct
// value).
func TestCache(t *testing.T) {
	ex := build(t, "cache")
	want := readmeOutput(t, "cache")
	if len(want) != 5 {
		t.Fatalf("cache/README.md expected output: got %q, want 5 lines", want)
	}
	res := run(t, ex)
	if got := lines(res.stdout); !slices.Equal(got, want) {
		t.Fatalf("cache stdout: got %q, want exactly %q", got, want)
	}
}

// buildRaylet builds the raylet binary for the examples that start
// clusters of their own processes.
func buildRaylet(t *testing.T) string {
	t.Helper()
	raylet := filepath.Join(t.TempDir(), "raylet")
	if out, err := exec.Command(goTool(t), "build", "-o", raylet, "../cmd/raylet").CombinedOutput(); err != nil {
		t.Fatalf("go build ../cmd/raylet: %v\n%s", err, out)
	}
	return raylet
}

// TestFiles runs examples/files (exercise 4) with a raylet binary built
// here: it must print its README's output and leave no raylet process and
// no cluster directory behind.
func TestFiles(t *testing.T) {
	ex := build(t, "files")
	raylet := buildRaylet(t)
	tmp := t.TempDir()
	ctx, cancel := context.WithTimeout(t.Context(), runTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, ex.bin, "-raylet", raylet)
	var env []string
	for _, kv := range os.Environ() {
		if k, _, _ := strings.Cut(kv, "="); k == "GORAY_ADDRESS" || k == "GORAY_WORKER" || k == "TMPDIR" {
			continue
		}
		env = append(env, kv)
	}
	cmd.Env = append(env, "TMPDIR="+tmp)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	cmd.WaitDelay = 5 * time.Second
	rayletProcs := func() []int { return exampleProcs(example{bin: raylet}) }
	t.Cleanup(func() {
		for _, p := range rayletProcs() {
			t.Logf("cleanup: killing leftover raylet %d", p)
			_ = syscall.Kill(p, syscall.SIGKILL)
		}
	})
	if err := cmd.Run(); err != nil {
		t.Fatalf("files: %v\nstdout:\n%s\nstderr:\n%s", err, stdout.String(), stderr.String())
	}
	if got, want := lines(stdout.String()), readmeOutput(t, "files"); !slices.Equal(got, want) {
		t.Fatalf("files stdout: got\n%s\nwant (README)\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	lctx, lcancel := context.WithTimeout(context.Background(), leakWait)
	defer lcancel()
	var left []string
	if err := testwait.Until(lctx, "the example's raylets and directory gone", func() bool {
		left = nil
		ents, _ := os.ReadDir(tmp)
		for _, e := range ents {
			if strings.HasPrefix(e.Name(), "goray-files-example-") {
				left = append(left, e.Name())
			}
		}
		return len(rayletProcs()) == 0 && len(left) == 0
	}); err != nil {
		t.Fatalf("after files exited: got raylets %v and directories %v left, want none", rayletProcs(), left)
	}
}
