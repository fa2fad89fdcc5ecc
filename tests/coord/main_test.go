// Package coord_test is the coordination service's acceptance tier: real
// `raylet --head` processes, clients as processes (testdata/coordclient),
// the head SIGKILLed and restarted, lock holders SIGKILLed.
package coord_test

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/goray/goray/internal/testcluster"
)

const buildTimeout = 5 * time.Minute

var bins struct{ dir, raylet, client string }

func TestMain(m *testing.M) {
	code := testMain(m)
	if code == 0 {
		if err := goleak.Find(); err != nil {
			fmt.Fprintln(os.Stderr, "tests/coord: goroutines left after the tests:", err)
			code = 1
		}
	}
	os.Exit(code)
}

func testMain(m *testing.M) int {
	dir, err := os.MkdirTemp("", "goray-coord-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer os.RemoveAll(dir)
	bins.dir, bins.raylet, bins.client = dir, filepath.Join(dir, "raylet"), filepath.Join(dir, "coordclient")
	ctx, cancel := context.WithTimeout(context.Background(), buildTimeout)
	defer cancel()
	out, err := exec.CommandContext(ctx, "go", "env", "GOMOD").Output()
	if err != nil || strings.TrimSpace(string(out)) == "" {
		fmt.Fprintln(os.Stderr, "go env GOMOD:", err)
		return 1
	}
	root := filepath.Dir(strings.TrimSpace(string(out)))
	for _, b := range []struct{ out, pkg string }{{bins.raylet, "./cmd/raylet"}, {bins.client, "./tests/coord/testdata/coordclient"}} {
		cmd := exec.CommandContext(ctx, "go", "build", "-o", b.out, b.pkg)
		cmd.Dir = root
		if out, err := cmd.CombinedOutput(); err != nil {
			fmt.Fprintf(os.Stderr, "go build -o %s %s: %v\n%s", b.out, b.pkg, err, out)
			return 1
		}
	}
	return m.Run()
}

// etcdCreds reads the endpoint and read-write credentials the head wrote
// beside its token file.
type etcdCreds struct{ endpoints, user, password string }

func readCreds(t *testing.T, tokenFile string) etcdCreds {
	t.Helper()
	f, err := os.Open(tokenFile + ".etcd")
	if err != nil {
		t.Fatalf("the head's etcd credentials file: %v", err)
	}
	defer f.Close()
	fi, _ := f.Stat()
	if fi.Mode().Perm() != 0o600 {
		t.Fatalf("%s has mode %v, want 0600", f.Name(), fi.Mode().Perm())
	}
	var c etcdCreds
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		k, v, _ := strings.Cut(sc.Text(), "=")
		switch k {
		case "ETCDCTL_ENDPOINTS":
			c.endpoints = v
		case "ETCDCTL_USER":
			c.user, c.password, _ = strings.Cut(v, ":")
		}
	}
	if c.endpoints == "" || c.user == "" {
		t.Fatalf("%s lacks ETCDCTL_ENDPOINTS or ETCDCTL_USER", f.Name())
	}
	return c
}

func (c etcdCreds) env() []string {
	return []string{"COORD_ENDPOINTS=" + c.endpoints, "COORD_USER=" + c.user, "COORD_PASSWORD=" + c.password}
}

// startClient starts a coordclient process.
func startClient(t *testing.T, name string, env []string, stdin bool) *testcluster.Proc {
	t.Helper()
	return testcluster.StartProc(t, name, bins.client, nil, env, stdin)
}

var errStopped = errors.New("stopped")
