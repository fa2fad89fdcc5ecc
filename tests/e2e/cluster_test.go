package e2e

// Helpers of the multi-process tier: building the binaries, starting raylets
// and drivers as process groups that are always stopped, parsing the raylet's
// ready line, and scanning /proc for leaked processes and for workers.

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// Bounds of the helpers (not assertions on speed: they only turn a hang into
// a failure).
const (
	readyTimeout = 30 * time.Second // a raylet prints its ready line
	stopTimeout  = 15 * time.Second // a process exits after SIGTERM before SIGKILL
	leakTimeout  = 5 * time.Second  // leftover processes disappear after a test
	buildTimeout = 5 * time.Minute
)

// bins are the binaries TestMain builds.
var bins struct {
	dir       string // holds both binaries
	raylet    string
	driver    string
	driverSHA string // hex SHA-256 of driver: the job binary raylets run workers from
}

func TestMain(m *testing.M) { os.Exit(testMain(m)) }

func testMain(m *testing.M) int {
	dir, err := os.MkdirTemp("", "goray-e2e-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, "e2e:", err)
		return 1
	}
	defer os.RemoveAll(dir)
	bins.dir = dir
	bins.raylet = filepath.Join(dir, "raylet")
	bins.driver = filepath.Join(dir, "driver")
	if err := buildBinaries(); err != nil {
		fmt.Fprintln(os.Stderr, "e2e:", err)
		return 1
	}
	return m.Run()
}

// buildBinaries builds the raylet and the driver, without -race so they
// start fast.
func buildBinaries() error {
	ctx, cancel := context.WithTimeout(context.Background(), buildTimeout)
	defer cancel()
	root, err := moduleRoot(ctx)
	if err != nil {
		return err
	}
	for _, b := range []struct{ out, pkg string }{
		{bins.raylet, "./cmd/raylet"},
		{bins.driver, "./tests/e2e/testdata/driver"},
	} {
		cmd := exec.CommandContext(ctx, "go", "build", "-o", b.out, b.pkg)
		cmd.Dir = root
		if out, err := cmd.CombinedOutput(); err != nil {
			return fmt.Errorf("go build -o %s %s: %v\n%s", b.out, b.pkg, err, out)
		}
	}
	data, err := os.ReadFile(bins.driver)
	if err != nil {
		return err
	}
	sum := sha256.Sum256(data)
	bins.driverSHA = hex.EncodeToString(sum[:])
	return nil
}

func moduleRoot(ctx context.Context) (string, error) {
	out, err := exec.CommandContext(ctx, "go", "env", "GOMOD").Output()
	if err != nil {
		return "", fmt.Errorf("go env GOMOD: %w", err)
	}
	gomod := strings.TrimSpace(string(out))
	if gomod == "" || gomod == os.DevNull {
		return "", errors.New("go env GOMOD: not inside the goray module")
	}
	return filepath.Dir(gomod), nil
}

// lineBuffer collects a process's output and lets a test wait for a line.
type lineBuffer struct {
	mu      sync.Mutex
	all     bytes.Buffer
	partial []byte
	lines   []string
	changed chan struct{} // closed and replaced on every new line
}

func newLineBuffer() *lineBuffer { return &lineBuffer{changed: make(chan struct{})} }

func (b *lineBuffer) Write(p []byte) (int, error) {
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
func (b *lineBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.all.String()
}

// find returns the first complete line that match accepts, and a channel
// closed when more lines arrive.
func (b *lineBuffer) find(match func(string) bool) (string, bool, <-chan struct{}) {
	b.mu.Lock()
	defer b.mu.Unlock()
	for _, l := range b.lines {
		if match(l) {
			return l, true, nil
		}
	}
	return "", false, b.changed
}

// proc is a process a test started in its own process group; it is stopped
// (SIGTERM, then SIGKILL, to the group) and waited for by t.Cleanup.
type proc struct {
	t      testing.TB
	name   string
	cmd    *exec.Cmd
	stdin  io.WriteCloser // nil unless asked for
	stdout *lineBuffer
	stderr *lineBuffer
	done   chan struct{} // closed when the process was waited for
	err    error         // Wait's error; read after done
}

// cleanEnv is the test's environment without goray variables, so that a
// developer's GORAY_ADDRESS or GORAY_TOKEN never reaches a child.
func cleanEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "GORAY_") && !strings.HasPrefix(kv, "E2E_") {
			env = append(env, kv)
		}
	}
	return env
}

// startProc starts path with args and extra environment in its own process
// group.
func startProc(t testing.TB, name, path string, args, env []string, withStdin bool) *proc {
	t.Helper()
	cmd := exec.Command(path, args...)
	cmd.Env = append(cleanEnv(), env...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.WaitDelay = 5 * time.Second
	p := &proc{t: t, name: name, cmd: cmd, stdout: newLineBuffer(), stderr: newLineBuffer(), done: make(chan struct{})}
	cmd.Stdout, cmd.Stderr = p.stdout, p.stderr
	if withStdin {
		w, err := cmd.StdinPipe()
		if err != nil {
			t.Fatalf("%s: stdin pipe: %v", name, err)
		}
		p.stdin = w
	}
	if err := cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", name, err)
	}
	go func() {
		p.err = cmd.Wait()
		close(p.done)
	}()
	t.Cleanup(func() {
		p.stop()
		if t.Failed() {
			t.Logf("%s (pid %d, %s) stdout:\n%s", name, p.pid(), p.exitDesc(), tail(p.stdout.String()))
			t.Logf("%s (pid %d) stderr:\n%s", name, p.pid(), tail(p.stderr.String()))
		}
	})
	return p
}

func tail(s string) string {
	const max = 8 << 10
	if len(s) > max {
		return "..." + s[len(s)-max:]
	}
	return s
}

func (p *proc) pid() int { return p.cmd.Process.Pid }

func (p *proc) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// stop ends the process group: SIGTERM, then SIGKILL after stopTimeout, and
// waits for the process. It is idempotent.
func (p *proc) stop() {
	if p.stdin != nil {
		p.stdin.Close()
	}
	pgid := p.pid()
	if !p.exited() {
		_ = syscall.Kill(-pgid, syscall.SIGTERM)
		select {
		case <-p.done:
		case <-time.After(stopTimeout):
			p.t.Errorf("%s (pid %d): got still running %s after SIGTERM, want exited; sending SIGKILL", p.name, pgid, stopTimeout)
		}
	}
	// Anything left in the group (the leader may have exited before its
	// children) is killed too.
	_ = syscall.Kill(-pgid, syscall.SIGKILL)
	<-p.done
}

// signal sends sig to the process (not its group).
func (p *proc) signal(t testing.TB, sig syscall.Signal) {
	t.Helper()
	if err := syscall.Kill(p.pid(), sig); err != nil {
		t.Fatalf("%s: kill -%d %d: %v", p.name, sig, p.pid(), err)
	}
}

// wait waits up to d for the process to exit and returns Wait's error; it
// fails t when the process is still running.
func (p *proc) wait(t testing.TB, d time.Duration) error {
	t.Helper()
	select {
	case <-p.done:
		return p.err
	case <-time.After(d):
		t.Fatalf("%s (pid %d): got still running after %s, want exited", p.name, p.pid(), d)
		return nil
	}
}

// exitCode is the exit status after the process was waited for, or -1 when a
// signal ended it.
func (p *proc) exitCode() int { return p.cmd.ProcessState.ExitCode() }

func (p *proc) exitDesc() string {
	if !p.exited() {
		return "running"
	}
	return p.cmd.ProcessState.String()
}

// waitLine waits up to d for a stdout line that match accepts; it fails t
// when none comes.
func (p *proc) waitLine(t testing.TB, d time.Duration, what string, match func(string) bool) string {
	t.Helper()
	timer := time.NewTimer(d)
	defer timer.Stop()
	for {
		line, ok, changed := p.stdout.find(match)
		if ok {
			return line
		}
		select {
		case <-changed:
		case <-p.done:
			if line, ok, _ := p.stdout.find(match); ok {
				return line
			}
			t.Fatalf("%s: got exit (%s) before %s, want %s\nstderr:\n%s", p.name, p.exitDesc(), what, what, tail(p.stderr.String()))
		case <-timer.C:
			t.Fatalf("%s: got no %s within %s, want one\nstdout:\n%s\nstderr:\n%s", p.name, what, d, tail(p.stdout.String()), tail(p.stderr.String()))
		}
	}
}

// readyLine is the raylet's ready line.
var readyLine = regexp.MustCompile(`^goray raylet ready: address=(\S+) node=([0-9a-f]+) head=(true|false) token_file=(\S*)$`)

// node is a running raylet process.
type node struct {
	*proc
	addr      string
	id        string // node ID in hex
	head      bool
	tokenFile string
	dataDir   string
}

// cluster is a set of raylet processes on loopback sharing one token file,
// all under one test directory.
type cluster struct {
	t         testing.TB
	dir       string
	tokenFile string
	head      *node
	nodes     []*node // head first
}

// newCluster prepares a cluster in a fresh test directory (no process yet)
// and registers, before anything else starts, the check that no process of
// the test outlives it.
func newCluster(t testing.TB) *cluster {
	t.Helper()
	dir := testDir(t)
	return &cluster{t: t, dir: dir, tokenFile: filepath.Join(dir, "token")}
}

// testDir makes the test's directory and registers the leak check for it; the
// check runs after every process of the test was stopped (cleanups run last
// registered first).
func testDir(t testing.TB) string {
	t.Helper()
	dir := t.TempDir()
	t.Cleanup(func() { checkNoLeaks(t, dir) })
	return dir
}

// startRaylet starts a raylet with args and parses its ready line.
func (c *cluster) startRaylet(name string, head bool, args ...string) *node {
	c.t.Helper()
	dataDir := filepath.Join(c.dir, name)
	args = append(args, "--token-file", c.tokenFile, "--data-dir", dataDir, "--log-level", "info")
	p := startProc(c.t, "raylet "+name, bins.raylet, args, nil, false)
	line := p.waitLine(c.t, readyTimeout, "ready line", readyLine.MatchString)
	m := readyLine.FindStringSubmatch(line)
	n := &node{proc: p, addr: m[1], id: m[2], head: m[3] == "true", tokenFile: m[4], dataDir: dataDir}
	if n.head != head {
		c.t.Fatalf("raylet %s ready line %q: got head=%t, want head=%t", name, line, n.head, head)
	}
	if n.tokenFile != c.tokenFile {
		c.t.Fatalf("raylet %s ready line %q: got token_file=%s, want %s", name, line, n.tokenFile, c.tokenFile)
	}
	c.nodes = append(c.nodes, n)
	return n
}

// startHead starts `raylet --head` on an ephemeral loopback port with the
// given resources JSON.
func (c *cluster) startHead(resources string, args ...string) *node {
	c.t.Helper()
	c.head = c.startRaylet("head", true, append([]string{"--head", "--listen", "127.0.0.1:0", "--resources", resources}, args...)...)
	return c.head
}

// headReadyLine is the ready line of `raylet --head --no-node`.
var headReadyLine = regexp.MustCompile(`^goray head ready: address=(\S+) token_file=(\S*)$`)

// startHeadOnly starts `raylet --head --no-node` (the head as its own
// process, with no node) on listen ("127.0.0.1:0" the first time, the same
// address to restart it) with the cluster's token file and a data dir kept
// across restarts, and makes it the cluster's head. Its node has no ID.
func (c *cluster) startHeadOnly(listen string, args ...string) *node {
	c.t.Helper()
	dataDir := filepath.Join(c.dir, "head")
	args = append([]string{"--head", "--no-node", "--listen", listen, "--token-file", c.tokenFile, "--data-dir", dataDir, "--log-level", "info"}, args...)
	p := startProc(c.t, "head", bins.raylet, args, nil, false)
	line := p.waitLine(c.t, readyTimeout, "head ready line", headReadyLine.MatchString)
	m := headReadyLine.FindStringSubmatch(line)
	if m[2] != c.tokenFile {
		c.t.Fatalf("head ready line %q: got token_file=%s, want %s", line, m[2], c.tokenFile)
	}
	c.head = &node{proc: p, addr: m[1], head: true, tokenFile: m[2], dataDir: dataDir}
	return c.head
}

// join starts a raylet that joins the head with the given resources JSON.
func (c *cluster) join(name, resources string) *node {
	c.t.Helper()
	if c.head == nil {
		c.t.Fatal("join before startHead")
	}
	return c.startRaylet(name, false, "--address", c.head.addr, "--listen", "127.0.0.1:0", "--resources", resources)
}

// driver starts the driver program connected to the head, with extra
// environment (E2E_MODE=... etc.); t (the test or subtest that runs it) stops
// it when it ends.
func (c *cluster) driver(t testing.TB, name string, withStdin bool, env ...string) *proc {
	t.Helper()
	env = append([]string{"GORAY_ADDRESS=" + c.head.addr, "GORAY_TOKEN_FILE=" + c.tokenFile}, env...)
	return startProc(t, "driver "+name, bins.driver, nil, env, withStdin)
}

// procInfo is a process found in /proc.
type procInfo struct {
	pid     int
	cmdline []string
	env     map[string]string // only filled by workers
}

func (p procInfo) String() string {
	return fmt.Sprintf("pid %d: %s", p.pid, strings.Join(p.cmdline, " "))
}

// scanProcs lists the live processes (not zombies) for which keep holds.
func scanProcs(keep func(pid int, cmdline []string) bool) []procInfo {
	entries, _ := os.ReadDir("/proc")
	self := os.Getpid()
	var out []procInfo
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
			out = append(out, procInfo{pid: pid, cmdline: cmdline})
		}
	}
	return out
}

// mentioning lists the processes whose command line mentions any of subs.
func mentioning(subs ...string) []procInfo {
	return scanProcs(func(_ int, cmdline []string) bool {
		joined := strings.Join(cmdline, " ")
		return slices.ContainsFunc(subs, func(s string) bool { return strings.Contains(joined, s) })
	})
}

// checkNoLeaks fails the test when, leakTimeout after its processes were
// stopped, a process still mentions the built binaries or dir (raylets,
// drivers, and workers started from a raylet's data dir under dir). Leftovers
// are SIGKILLed so they cannot disturb later tests.
func checkNoLeaks(t testing.TB, dir string) {
	t.Helper()
	var left []procInfo
	for deadline := time.Now().Add(leakTimeout); ; time.Sleep(100 * time.Millisecond) {
		left = mentioning(bins.dir, dir)
		if len(left) == 0 || time.Now().After(deadline) {
			break
		}
	}
	if len(left) == 0 {
		return
	}
	t.Errorf("processes left %s after the test: got %d:\n%s\nwant none", leakTimeout, len(left), fmtProcs(left))
	for _, p := range left {
		_ = syscall.Kill(p.pid, syscall.SIGKILL)
	}
}

func fmtProcs(ps []procInfo) string {
	var b strings.Builder
	for _, p := range ps {
		fmt.Fprintf(&b, "  %s\n", p)
	}
	return b.String()
}

// readEnviron reads a process's environment; nil when it is unreadable.
func readEnviron(pid int) map[string]string {
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

// workers lists the goray worker processes started under dir: processes
// whose executable is the driver binary (as the job binary a raylet fetched
// into its data dir, named by its SHA-256) and whose environment has
// GORAY_WORKER=1.
func workers(dir string) []procInfo {
	ps := scanProcs(func(_ int, cmdline []string) bool {
		exe := cmdline[0]
		return strings.HasPrefix(exe, dir+string(filepath.Separator)) && filepath.Base(exe) == bins.driverSHA
	})
	var out []procInfo
	for _, p := range ps {
		env := readEnviron(p.pid)
		if env["GORAY_WORKER"] != "1" {
			continue
		}
		p.env = env
		out = append(out, p)
	}
	return out
}

// workersByNode counts workers by their GORAY_NODE_ID.
func workersByNode(ws []procInfo) map[string]int {
	m := map[string]int{}
	for _, w := range ws {
		m[w.env["GORAY_NODE_ID"]]++
	}
	return m
}

// waitNoWorkers waits up to d for every worker under dir to be gone and
// fails the test with the ones left.
func waitNoWorkers(t testing.TB, dir string, d time.Duration, after string) {
	t.Helper()
	var left []procInfo
	for deadline := time.Now().Add(d); ; time.Sleep(100 * time.Millisecond) {
		left = workers(dir)
		if len(left) == 0 {
			return
		}
		if time.Now().After(deadline) {
			break
		}
	}
	t.Errorf("worker processes %s after %s: got %d:\n%s\nwant none", d, after, len(left), fmtProcs(left))
}
