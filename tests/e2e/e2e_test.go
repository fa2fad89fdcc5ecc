package e2e

import (
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/goray/goray/internal/rpc"
	"github.com/goray/goray/internal/testcluster"
	"github.com/goray/goray/internal/testwait"
	pb "github.com/goray/goray/proto/goray/v1"
	"github.com/goray/goray/runtime"
)

// Bounds on runs (they turn hangs into failures; no test asserts a speed).
const (
	driverTimeout   = 90 * time.Second // a driver run to completion
	failFastTimeout = 15 * time.Second // a driver or raylet that must fail at once
	workerGone      = 10 * time.Second // workers of a finished job or stopped raylet
	rayletExit      = 30 * time.Second // a raylet after SIGTERM
)

// TestCluster is the acceptance test: a head and two joined raylets as real
// processes; the driver places actors and tasks by custom resources on
// distinct nodes, passes a ref made on node B to a task on node C, and gets a
// 64 MiB value made on node C back byte for byte.
func TestCluster(t *testing.T) {
	c := newCluster(t)
	c.StartHead(`{"CPU":2}`)
	b := c.Join("b", `{"CPU":2,"node_b":1}`)
	cn := c.Join("c", `{"CPU":2,"node_c":1}`)
	if b.NodeID == cn.NodeID || b.NodeID == c.Head.NodeID {
		t.Fatalf("node IDs: got head=%s b=%s c=%s, want three distinct", c.Head.NodeID, b.NodeID, cn.NodeID)
	}

	d := c.driver(t, "cluster", false, "E2E_MODE=cluster", "E2E_NODE_B="+b.NodeID, "E2E_NODE_C="+cn.NodeID)
	err := d.Wait(t, driverTimeout)
	if code := d.ExitCode(); err != nil || code != 0 {
		t.Fatalf("driver: got exit status %d (%v), want 0\nstderr:\n%s", code, err, testcluster.Tail(d.Stderr.String()))
	}
	line, ok, _ := d.Stdout.Find(func(l string) bool { return strings.HasPrefix(l, "E2E OK ") })
	if !ok {
		t.Fatalf("driver stdout: got %q, want a line starting %q", d.Stdout.String(), "E2E OK ")
	}
	want := fmt.Sprintf("nodes=%s,%s blob_bytes=%d ", b.NodeID[:8], cn.NodeID[:8], 64<<20)
	if !strings.Contains(line, want) {
		t.Errorf("driver result line: got %q, want it to contain %q", line, want)
	}
}

// startBlockingDriver runs the driver in block mode and waits for READY: it
// then has actors and tasks on the head node and on node b.
func startBlockingDriver(t *testing.T, c *cluster, name string) *proc {
	t.Helper()
	d := c.driver(t, name, true, "E2E_MODE=block")
	d.WaitLine(t, driverTimeout, "READY line", func(l string) bool { return l == "READY" })
	return d
}

// requireWorkersOn fails unless every node has at least one worker under dir.
func requireWorkersOn(t *testing.T, dir string, nodes ...*node) {
	t.Helper()
	ws := workers(dir)
	byNode := workersByNode(ws)
	t.Logf("%d worker processes by node: %v", len(ws), byNode)
	for _, n := range nodes {
		if byNode[n.NodeID] < 1 {
			t.Fatalf("workers on node %s (%s): got %d, want at least 1; all workers: %v", n.Name(), n.NodeID, byNode[n.NodeID], byNode)
		}
	}
}

// TestDriverExitCleansWorkers checks that a job's workers on every node are
// stopped when its driver ends, normally or by SIGKILL.
func TestDriverExitCleansWorkers(t *testing.T) {
	c := newCluster(t)
	c.StartHead(`{"CPU":2}`)
	b := c.Join("b", `{"CPU":2,"node_b":1}`)

	for _, tc := range []struct {
		name string
		end  func(t *testing.T, d *proc)
	}{
		{"shutdown", func(t *testing.T, d *proc) {
			if _, err := d.Stdin.Write([]byte("done\n")); err != nil {
				t.Fatalf("write to driver stdin: %v", err)
			}
			err := d.Wait(t, driverTimeout)
			if code := d.ExitCode(); err != nil || code != 0 {
				t.Fatalf("driver after its stdin line: got exit status %d (%v), want 0", code, err)
			}
		}},
		{"sigkill", func(t *testing.T, d *proc) {
			if err := syscall.Kill(-d.Pid(), syscall.SIGKILL); err != nil {
				t.Fatalf("SIGKILL driver: %v", err)
			}
			d.Wait(t, stopTimeout)
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d := startBlockingDriver(t, c, tc.name)
			requireWorkersOn(t, c.Dir, c.Head, b)
			tc.end(t, d)
			waitNoWorkers(t, c.Dir, workerGone, "the driver ended ("+tc.name+")")
		})
	}
	// The raylets are still serving: a new job runs on both nodes.
	t.Run("cluster-still-serves", func(t *testing.T) {
		d := startBlockingDriver(t, c, "after")
		requireWorkersOn(t, c.Dir, c.Head, b)
		d.Stdin.Close()
		if err := d.Wait(t, driverTimeout); err != nil {
			t.Fatalf("driver after stdin EOF: got %v, want exit status 0", err)
		}
		waitNoWorkers(t, c.Dir, workerGone, "the driver ended")
	})
}

// deadAddr is a loopback address where nothing listens.
func deadAddr(t *testing.T) string {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := lis.Addr().String()
	lis.Close()
	return addr
}

// TestNoHeadAtAddress checks that a driver and a joining raylet pointed at an
// address where no goray head listens fail fast with a clear message.
func TestNoHeadAtAddress(t *testing.T) {
	dir := testDir(t)
	addr := deadAddr(t)
	tokenFile := filepath.Join(dir, "token")
	if err := rpc.WriteTokenFile(tokenFile, "0123456789abcdef"); err != nil {
		t.Fatal(err)
	}

	t.Run("driver", func(t *testing.T) {
		d := testcluster.StartProc(t, "driver", bins.driver, nil, []string{"GORAY_ADDRESS=" + addr, "GORAY_TOKEN_FILE=" + tokenFile}, false)
		d.Wait(t, failFastTimeout)
		if code := d.ExitCode(); code == 0 {
			t.Fatalf("driver: got exit status 0, want non-zero")
		}
		stderr := d.Stderr.String()
		if want := "no goray raylet answers at " + addr; !strings.Contains(stderr, want) {
			t.Errorf("driver stderr: got %q, want it to contain %q", stderr, want)
		}
	})
	t.Run("raylet", func(t *testing.T) {
		r := testcluster.StartProc(t, "raylet", bins.raylet, []string{"--address", addr, "--token-file", tokenFile, "--data-dir", filepath.Join(dir, "raylet")}, nil, false)
		r.Wait(t, failFastTimeout)
		if code := r.ExitCode(); code == 0 {
			t.Fatalf("raylet --address %s: got exit status 0, want non-zero", addr)
		}
		stderr := r.Stderr.String()
		if want := "no goray head answers at " + addr; !strings.Contains(stderr, want) {
			t.Errorf("raylet stderr: got %q, want it to contain %q", stderr, want)
		}
		if out := r.Stdout.String(); out != "" {
			t.Errorf("raylet stdout: got %q, want no ready line", out)
		}
	})
}

// TestWrongToken checks that the cluster refuses a driver and raw RPCs
// without the cluster token.
func TestWrongToken(t *testing.T) {
	c := newCluster(t)
	head := c.StartHead(`{"CPU":2}`)

	t.Run("driver", func(t *testing.T) {
		d := c.driver(t, "wrong-token", false, "GORAY_TOKEN=wrong")
		d.Wait(t, failFastTimeout)
		if code := d.ExitCode(); code == 0 {
			t.Fatalf("driver with GORAY_TOKEN=wrong: got exit status 0, want non-zero")
		}
		stderr := d.Stderr.String()
		if !strings.Contains(stderr, "token") {
			t.Errorf("driver stderr: got %q, want a message about the token", stderr)
		}
		if strings.Contains(stderr, "no goray raylet answers") {
			t.Errorf("driver stderr: got %q, want the token named as the cause, not an unreachable raylet", stderr)
		}
	})

	token, err := rpc.ReadTokenFile(c.TokenFile)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name, token string
		want        codes.Code
	}{
		{"no-token", "", codes.Unauthenticated},
		{"wrong-token", "wrong", codes.Unauthenticated},
		{"right-token", token, codes.OK},
	} {
		t.Run("rpc/"+tc.name, func(t *testing.T) {
			cc, err := rpc.Dial(head.Addr, tc.token)
			if err != nil {
				t.Fatal(err)
			}
			defer cc.Close()
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			resp, err := rpc.NewHeadClient(cc).ListNodes(ctx, &pb.ListNodesRequest{})
			if got := status.Code(err); got != tc.want {
				t.Fatalf("NodeRegistryService.ListNodes with token %q: got %v (%v), want %v", tc.token, got, err, tc.want)
			}
			_, err = rpc.NewNodeClient(cc).GetNodeInfo(ctx, &pb.GetNodeInfoRequest{})
			if got := status.Code(err); got != tc.want {
				t.Fatalf("NodeService.GetNodeInfo with token %q: got %v (%v), want %v", tc.token, got, err, tc.want)
			}
			if tc.want != codes.OK {
				return
			}
			var ids []string
			for _, n := range resp.GetNodes() {
				ids = append(ids, fmt.Sprintf("%x", n.GetNodeId()))
			}
			if len(ids) != 1 || ids[0] != head.NodeID {
				t.Errorf("ListNodes: got nodes %v, want [%s]", ids, head.NodeID)
			}
		})
	}
}

// TestRayletSIGTERM checks that a raylet with live workers exits 0 on
// SIGTERM and takes its workers with it: first a joined raylet, then the head.
func TestRayletSIGTERM(t *testing.T) {
	c := newCluster(t)
	c.StartHead(`{"CPU":2}`)
	b := c.Join("b", `{"CPU":2,"node_b":1}`)
	startBlockingDriver(t, c, "block")
	requireWorkersOn(t, c.Dir, c.Head, b)

	for _, n := range []*node{b, c.Head} {
		t.Run(n.Name(), func(t *testing.T) {
			n.Signal(t, syscall.SIGTERM)
			err := n.Wait(t, rayletExit)
			if err != nil || n.ExitCode() != 0 {
				t.Fatalf("%s after SIGTERM: got %s (%v), want exit status 0\nstderr:\n%s", n.Name(), n.ExitDesc(), err, testcluster.Tail(n.Stderr.String()))
			}
			left := workersByNode(workers(c.Dir))[n.NodeID]
			if left != 0 {
				t.Errorf("workers of %s after it exited: got %d, want 0", n.Name(), left)
			}
		})
	}
	// Nothing of the job is left anywhere once every raylet is gone.
	waitNoWorkers(t, c.Dir, workerGone, "every raylet exited")
}

// TestDetachedActor: a detached named actor outlives the driver that made
// it (a non-detached one does not); a later driver finds it with its state,
// and once it is killed, its job's workers stop.
func TestDetachedActor(t *testing.T) {
	c := newCluster(t)
	c.StartHead(`{"CPU":2}`)
	d := c.driver(t, "detached-create", false, "E2E_MODE=detached-create")
	if err := d.Wait(t, driverTimeout); err != nil {
		t.Fatalf("creating driver: got %v, want exit status 0", err)
	}
	if out := d.Stdout.String(); !strings.Contains(out, "DETACHED CREATED 5") {
		t.Fatalf("creating driver output: got %q, want DETACHED CREATED 5", out)
	}
	// Its worker still runs after its driver exited.
	requireWorkersOn(t, c.Dir, c.Head)
	u := c.driver(t, "detached-use", false, "E2E_MODE=detached-use")
	if err := u.Wait(t, driverTimeout); err != nil {
		t.Fatalf("using driver: got %v, want exit status 0", err)
	}
	if out := u.Stdout.String(); !strings.Contains(out, "DETACHED OK 6") {
		t.Fatalf("using driver output: got %q, want DETACHED OK 6", out)
	}
	waitNoWorkers(t, c.Dir, workerGone, "the detached actor was killed")
}

// TestNodeDeath is the node-death rule of every tier
// (testcluster.NodeDeath, which tests/cluster runs in-process) on raylet
// processes: SIGKILL of a node's raylet (its workers die with it) under
// running work; the running task is retried on a live node, a stored result
// lost with the node is rebuilt from lineage, an actor with restarts left
// starts again elsewhere. This test process is the driver; the raylets run
// its workers from this test binary.
func TestNodeDeath(t *testing.T) {
	c := newCluster(t)
	c.StartHead(`{"CPU":2}`, "--node-timeout", "3s")
	c.Join("spare", `{"CPU":2}`)
	ctx, cancel := context.WithTimeout(t.Context(), driverTimeout)
	defer cancel()
	if err := runtime.Init(ctx, runtime.WithAddress(c.Address()), runtime.WithToken(c.Token()), runtime.WithLogger(testcluster.Logger())); err != nil {
		t.Fatalf("connect to the cluster: %v", err)
	}
	// Registered after the processes: runs before they are stopped.
	t.Cleanup(runtime.Shutdown)
	testcluster.NodeDeath(t, c)
}

// TestWorkerSIGKILL kills worker processes by signal: an actor's (it has a
// restart left) and a running task's (default retries). The actor restarts
// with fresh state and the task is retried to completion.
func TestWorkerSIGKILL(t *testing.T) {
	c := newCluster(t)
	c.StartHead(`{"CPU":2}`)
	pidFile := filepath.Join(c.Dir, "task.pid")
	d := c.driver(t, "workerkill", true, "E2E_MODE=workerkill", "E2E_PIDFILE="+pidFile)
	line := d.WaitLine(t, driverTimeout, "READY line", func(l string) bool { return strings.HasPrefix(l, "READY actor_pid=") })
	actorPid, err := strconv.Atoi(strings.TrimPrefix(line, "READY actor_pid="))
	if err != nil {
		t.Fatal(err)
	}
	var taskPid int
	testwait.Eventually(t, driverTimeout, "pid of the task's worker in "+pidFile, func() bool {
		if b, err := os.ReadFile(pidFile); err == nil {
			taskPid, _ = strconv.Atoi(strings.TrimSpace(string(b)))
		}
		return taskPid != 0
	})
	for _, pid := range []int{actorPid, taskPid} {
		if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
			t.Fatalf("SIGKILL worker %d: %v", pid, err)
		}
	}
	if _, err := d.Stdin.Write([]byte("killed\n")); err != nil {
		t.Fatal(err)
	}
	if err := d.Wait(t, driverTimeout); err != nil {
		t.Fatalf("driver: got %v, want exit status 0", err)
	}
	out, ok, _ := d.Stdout.Find(func(l string) bool { return strings.HasPrefix(l, "WORKERKILL OK ") })
	if !ok || strings.Contains(out, "task_retries=0") {
		t.Fatalf("driver stdout: got %q, want WORKERKILL OK with at least one task retry", d.Stdout.String())
	}
}

// TestCacheNodeDeath is the cache's node-loss rule (testcluster.CacheNodeDeath)
// on raylet processes: the raylet hosting a shard is SIGKILLed; its keys
// become misses, then the shard restarts on the head's node and serves.
func TestCacheNodeDeath(t *testing.T) {
	c := newCluster(t)
	c.StartHead(`{"CPU":2}`, "--node-timeout", "3s")
	ctx, cancel := context.WithTimeout(t.Context(), driverTimeout)
	defer cancel()
	if err := runtime.Init(ctx, runtime.WithAddress(c.Address()), runtime.WithToken(c.Token()), runtime.WithLogger(testcluster.Logger())); err != nil {
		t.Fatalf("connect to the cluster: %v", err)
	}
	t.Cleanup(runtime.Shutdown)
	testcluster.CacheNodeDeath(t, c)
}
