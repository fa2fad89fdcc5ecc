// Package clients runs the Python and Node.js client suites (clients/python,
// clients/node) against a real cluster: it builds `raylet`, `goray` and
// examples/service, starts `raylet --head` and one more raylet as separate
// processes on loopback, deploys the service under the namespace "service"
// with `goray deploy`, and runs each suite with GORAY_TEST_ADDRESS and
// GORAY_TEST_TOKEN set. Every process is stopped when the test ends, failed
// or not.
//
// A suite whose runtime is missing (Debian's python3-grpcio, python3-protobuf,
// python3-msgpack; node and `npm ci` in clients/node) is skipped, unless
// GORAY_REQUIRE_CLIENT_TESTS=1 (set by .ci/run), which makes it a failure.
package clients

import (
	"bufio"
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

const (
	buildTimeout = 5 * time.Minute
	readyTimeout = 30 * time.Second
	suiteTimeout = 5 * time.Minute
	stopTimeout  = 15 * time.Second
	namespace    = "service"
)

func required() bool { return os.Getenv("GORAY_REQUIRE_CLIENT_TESTS") == "1" }

func moduleRoot(t *testing.T) string {
	t.Helper()
	out, err := exec.Command("go", "env", "GOMOD").Output()
	if err != nil {
		t.Fatalf("go env GOMOD: %v", err)
	}
	return filepath.Dir(strings.TrimSpace(string(out)))
}

// proc is a started process group, stopped by t.Cleanup.
type proc struct {
	cmd  *exec.Cmd
	out  *syncBuffer
	done chan struct{}
}

type syncBuffer struct {
	mu  chan struct{}
	buf bytes.Buffer
}

func newSyncBuffer() *syncBuffer { return &syncBuffer{mu: make(chan struct{}, 1)} }

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu <- struct{}{}
	defer func() { <-b.mu }()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu <- struct{}{}
	defer func() { <-b.mu }()
	return b.buf.String()
}

// start runs bin in its own process group; its stderr is kept for the log and
// its stdout is scanned for the raylet's ready line.
func start(t *testing.T, name, bin string, args ...string) (*proc, string) {
	t.Helper()
	cmd := exec.Command(bin, args...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	p := &proc{cmd: cmd, out: newSyncBuffer(), done: make(chan struct{})}
	cmd.Stderr = p.out
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", name, err)
	}
	ready := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			line := sc.Text()
			if strings.HasPrefix(line, "goray raylet ready:") {
				select {
				case ready <- line:
				default:
				}
			}
		}
	}()
	go func() { _ = cmd.Wait(); close(p.done) }()
	t.Cleanup(func() {
		_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGTERM)
		select {
		case <-p.done:
		case <-time.After(stopTimeout):
			t.Errorf("%s did not exit %s after SIGTERM: killed", name, stopTimeout)
			_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
			<-p.done
		}
		if t.Failed() {
			t.Logf("%s stderr:\n%s", name, tail(p.out.String(), 80))
		}
	})
	select {
	case line := <-ready:
		return p, line
	case <-p.done:
		t.Fatalf("%s exited before it was ready:\n%s", name, p.out.String())
	case <-time.After(readyTimeout):
		t.Fatalf("%s not ready within %s:\n%s", name, readyTimeout, p.out.String())
	}
	return nil, ""
}

func field(line, key string) string {
	for _, f := range strings.Fields(line) {
		if v, ok := strings.CutPrefix(f, key+"="); ok {
			return v
		}
	}
	return ""
}

func tail(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

func TestClients(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a cluster: skipped with -short")
	}
	root := moduleRoot(t)
	bin := t.TempDir()
	ctx, cancel := context.WithTimeout(context.Background(), buildTimeout)
	defer cancel()
	for _, b := range []struct{ out, pkg string }{
		{"raylet", "./cmd/raylet"}, {"goray", "./cmd/goray"}, {"service", "./examples/service"},
	} {
		cmd := exec.CommandContext(ctx, "go", "build", "-o", filepath.Join(bin, b.out), b.pkg)
		cmd.Dir = root
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("go build %s: %v\n%s", b.pkg, err, out)
		}
	}

	// examples/service on its own (embedded cluster) prints what its README says.
	t.Run("service standalone", func(t *testing.T) {
		cmd := exec.CommandContext(ctx, filepath.Join(bin, "service"))
		for _, kv := range os.Environ() {
			if !strings.HasPrefix(kv, "GORAY_") {
				cmd.Env = append(cmd.Env, kv)
			}
		}
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("service: %v\n%s", err, out)
		}
		readme, err := os.ReadFile(filepath.Join(root, "examples/service/README.md"))
		if err != nil {
			t.Fatal(err)
		}
		_, after, _ := strings.Cut(string(readme), "Expected output:\n\n```\n")
		want, _, _ := strings.Cut(after, "```")
		if string(out) != want {
			t.Fatalf("service output: got %q, want %q (examples/service/README.md)", out, want)
		}
	})

	tokenFile := filepath.Join(t.TempDir(), "cluster.token")
	_, line := start(t, "head", filepath.Join(bin, "raylet"), "--head", "--listen", "127.0.0.1:0",
		"--token-file", tokenFile, "--resources", `{"CPU":2}`, "--log-level", "warn")
	addr := field(line, "address")
	start(t, "raylet 2", filepath.Join(bin, "raylet"), "--address", addr, "--token-file", tokenFile,
		"--resources", `{"CPU":2}`, "--log-level", "warn")
	token, err := os.ReadFile(tokenFile)
	if err != nil {
		t.Fatal(err)
	}

	deploy := exec.CommandContext(ctx, filepath.Join(bin, "goray"), "deploy", filepath.Join(bin, "service"),
		"--namespace", namespace, "--address", addr)
	deploy.Env = append(os.Environ(), "GORAY_TOKEN_FILE="+tokenFile)
	out, err := deploy.CombinedOutput()
	if err != nil {
		t.Fatalf("goray deploy: %v\n%s", err, out)
	}
	t.Logf("goray deploy:\n%s", out)
	if !strings.Contains(string(out), `deployed service to namespace "service"`) {
		t.Fatalf("goray deploy output: got %q, want a line saying it deployed the service", out)
	}

	env := append(os.Environ(),
		"GORAY_TEST_ADDRESS="+addr,
		"GORAY_TEST_TOKEN="+strings.TrimSpace(string(token)),
		"GORAY_TEST_NAMESPACE="+namespace,
	)
	// The suites share the counter actor: run them one after the other.
	t.Run("python", func(t *testing.T) {
		py := "/usr/bin/python3"
		if err := exec.Command(py, "-c", "import grpc, google.protobuf, msgpack").Run(); err != nil {
			missing(t, "python3 with grpcio, protobuf and msgpack (apt-get install python3-grpcio python3-protobuf python3-msgpack)")
		}
		runSuite(t, root, env, py, "-m", "unittest", "discover", "-s", "clients/python/tests", "-v")
	})
	t.Run("node", func(t *testing.T) {
		if _, err := exec.LookPath("node"); err != nil {
			missing(t, "node")
		}
		if _, err := os.Stat(filepath.Join(root, "clients/node/node_modules/@grpc/grpc-js")); err != nil {
			missing(t, "clients/node/node_modules (run `npm ci` in clients/node)")
		}
		runSuite(t, filepath.Join(root, "clients/node"), env, "node", "--test", "test/")
	})
	// Standard etcd clients on the head's coordination service.
	etcdSuites(t, root, tokenFile)
}

func missing(t *testing.T, what string) {
	t.Helper()
	if required() {
		t.Fatalf("GORAY_REQUIRE_CLIENT_TESTS=1 but %s is missing", what)
	}
	t.Skipf("%s is missing: skipped (set GORAY_REQUIRE_CLIENT_TESTS=1 to fail instead)", what)
}

// runSuite runs a client suite in dir and logs its output's tail (with its
// closing summary) whether it passes or not.
func runSuite(t *testing.T, dir string, env []string, name string, args ...string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), suiteTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Dir = dir
	cmd.Env = env
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	cmd.WaitDelay = 5 * time.Second
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	t.Logf("%s %s: passed\n%s", name, strings.Join(args, " "), tail(string(out), 12))
}
