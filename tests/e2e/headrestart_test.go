package e2e

import (
	"context"
	"encoding/hex"
	"fmt"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/goray/goray/internal/rpc"
	"github.com/goray/goray/internal/testcluster"
	"github.com/goray/goray/internal/testwait"
	pb "github.com/goray/goray/proto/goray/v1"
)

// Head restart settings: a short node timeout, so the test sees the raylets
// heartbeat the restarted head past a whole timeout, and a short driver
// reconnect grace, so the orphaned job is finished soon.
const (
	headNodeTimeout   = "3s"
	headDriverTimeout = 6 * time.Second
)

// TestHeadRestart runs the head as its own process (raylet --head
// --no-node) with two raylets, SIGKILLs it and restarts it at the same
// address and data dir. While it is down, calls to existing actors keep
// working; after it is back the raylets are alive with the same node IDs,
// the driver's job is still running with its workers, new actors and tasks
// work, and the old actors kept their state. A driver SIGKILLed while the
// head was down has its job finished, and its workers stopped, once the
// reconnect grace passes.
func TestHeadRestart(t *testing.T) {
	c := newCluster(t)
	headArgs := []string{"--node-timeout", headNodeTimeout, "--driver-reconnect-timeout", headDriverTimeout.String()}
	head := c.StartHeadOnly("127.0.0.1:0", headArgs...)
	b := c.Join("b", `{"CPU":2,"node_b":1}`)
	cn := c.Join("c", `{"CPU":2,"node_c":1}`)

	// Drivers connect to a raylet (the head-only process serves no node).
	startDriver := func(name string, at *node, env ...string) *proc {
		env = append([]string{"GORAY_ADDRESS=" + at.Addr, "GORAY_TOKEN_FILE=" + c.TokenFile}, env...)
		return testcluster.StartProc(t, "driver "+name, bins.driver, nil, env, true)
	}
	d := startDriver("headrestart", b, "E2E_MODE=headrestart")
	ready := d.WaitLine(t, driverTimeout, "READY line", func(l string) bool { return strings.HasPrefix(l, "READY job=") })
	job := strings.TrimPrefix(ready, "READY job=")
	// A second job whose driver dies while the head is down (block mode:
	// work on its local node c and on node b).
	orphan := startDriver("orphan", cn, "E2E_MODE=block")
	orphan.WaitLine(t, driverTimeout, "READY line", func(l string) bool { return l == "READY" })
	orphanJob := jobOfDriver(t, c.Dir, job)
	t.Logf("jobs: kept %s, orphaned %s", job, orphanJob)
	send := func(line string) {
		t.Helper()
		if _, err := d.Stdin.Write([]byte(line + "\n")); err != nil {
			t.Fatalf("write %q to the driver: %v", line, err)
		}
	}

	// kill -9 the head; the orphan's driver dies while it is down.
	head.Signal(t, syscall.SIGKILL)
	head.Wait(t, stopTimeout)
	if err := syscall.Kill(-orphan.Pid(), syscall.SIGKILL); err != nil {
		t.Fatalf("SIGKILL driver: %v", err)
	}
	orphan.Wait(t, stopTimeout)

	send("down")
	line := d.WaitLine(t, driverTimeout, "DOWN-OK line", func(l string) bool { return strings.HasPrefix(l, "DOWN-OK ") })
	if want := "DOWN-OK b=6 c=6"; line != want {
		t.Fatalf("actor calls while the head is down: got %q, want %q", line, want)
	}

	head = c.StartHeadOnly(head.Addr, headArgs...)
	restarted := time.Now()
	// The orphaned job is not finished before its grace period. (The wait
	// IS the point: nothing must happen within it.)
	time.Sleep(time.Second)
	if n := countJobWorkers(c.Dir, orphanJob); n == 0 {
		t.Fatalf("workers of job %s 1s after the head restart: got 0, want them kept until the %s grace passes", orphanJob, headDriverTimeout)
	}

	t.Run("raylets-reconnect", func(t *testing.T) {
		nodeTimeout, _ := time.ParseDuration(headNodeTimeout)
		// The point: the raylets stay alive past a whole node timeout on the
		// new head.
		time.Sleep(nodeTimeout + time.Second)
		nodes := listNodes(t, head)
		for _, n := range []*node{b, cn} {
			if !nodes[n.NodeID] {
				t.Errorf("node %s (%s) after the head restart and a node timeout: got not alive (nodes %v), want alive", n.Name(), n.NodeID, nodes)
			}
		}
		if len(nodes) != 2 {
			t.Errorf("nodes after the head restart: got %v, want exactly b and c (no new incarnation)", nodes)
		}
	})
	t.Run("job-kept", func(t *testing.T) {
		send("up")
		line := d.WaitLine(t, driverTimeout, "UP-OK line", func(l string) bool { return strings.HasPrefix(l, "UP-OK ") })
		want := regexp.MustCompile(`^UP-OK b=7 c=7 new=2 task=[0-9a-f]+$`)
		if !want.MatchString(line) {
			t.Fatalf("after the head restart: got %q, want it to match %s (actors kept their state; new work runs)", line, want)
		}
		if n := countJobWorkers(c.Dir, job); n == 0 {
			t.Fatalf("workers of the kept job %s: got 0, want its workers still running", job)
		}
		if st := jobState(t, head, job); st != "running" {
			t.Fatalf("job %s after the head restart: got %s, want running", job, st)
		}
	})
	t.Run("orphan-finished-after-grace", func(t *testing.T) {
		deadline := headDriverTimeout + workerGone
		testwait.Eventually(t, deadline-time.Since(restarted), fmt.Sprintf("end of the workers of job %s once the %s grace passed", orphanJob, headDriverTimeout), func() bool {
			return countJobWorkers(c.Dir, orphanJob) == 0
		})
		if waited := time.Since(restarted); waited < headDriverTimeout/2 {
			t.Errorf("orphaned job's workers gone %s after the head restart, want about the %s grace", waited, headDriverTimeout)
		}
		if st := jobState(t, head, orphanJob); st != "finished" {
			t.Errorf("orphaned job %s: got %s, want finished", orphanJob, st)
		}
		// The grace passed: the job whose driver reconnected is still running.
		if st := jobState(t, head, job); st != "running" {
			t.Errorf("job %s whose driver reconnected, after the grace: got %s, want running", job, st)
		}
		if n := countJobWorkers(c.Dir, job); n == 0 {
			t.Errorf("workers of job %s whose driver reconnected, after the grace: got 0, want them running", job)
		}
	})

	send("done")
	if err := d.Wait(t, driverTimeout); err != nil || d.ExitCode() != 0 {
		t.Fatalf("driver: got %s (%v), want exit status 0\nstderr:\n%s", d.ExitDesc(), err, testcluster.Tail(d.Stderr.String()))
	}
	waitNoWorkers(t, c.Dir, workerGone, "the driver ended")
}

// jobOfDriver waits for workers of a job other than known and returns that
// job's ID.
func jobOfDriver(t *testing.T, dir, known string) string {
	t.Helper()
	var job string
	testwait.Eventually(t, workerGone, "worker of a job other than "+known, func() bool {
		for _, w := range workers(dir) {
			if j := w.Env["GORAY_JOB_ID"]; j != "" && j != known {
				job = j
				return true
			}
		}
		return false
	})
	return job
}

// countJobWorkers counts the workers of job under dir.
func countJobWorkers(dir, job string) int {
	n := 0
	for _, w := range workers(dir) {
		if w.Env["GORAY_JOB_ID"] == job {
			n++
		}
	}
	return n
}

func headClient(t *testing.T, head *node) *rpc.HeadClient {
	t.Helper()
	token, err := rpc.ReadTokenFile(head.TokenFile)
	if err != nil {
		t.Fatal(err)
	}
	cc, err := rpc.Dial(head.Addr, token)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cc.Close() })
	return rpc.NewHeadClient(cc)
}

// listNodes returns the alive state of every node the head lists, by ID.
func listNodes(t *testing.T, head *node) map[string]bool {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	resp, err := headClient(t, head).ListNodes(ctx, &pb.ListNodesRequest{})
	if err != nil {
		t.Fatalf("ListNodes: %v", err)
	}
	out := map[string]bool{}
	for _, n := range resp.GetNodes() {
		out[hex.EncodeToString(n.GetNodeId())] = n.GetAlive()
	}
	return out
}

// jobState is "running" or "finished" as the head says.
func jobState(t *testing.T, head *node, job string) string {
	t.Helper()
	id, err := hex.DecodeString(job)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	resp, err := headClient(t, head).GetJob(ctx, &pb.GetJobRequest{JobId: id})
	if err != nil {
		t.Fatalf("GetJob %s: %v", job, err)
	}
	if resp.GetJob().GetFinished() {
		return "finished"
	}
	return "running"
}
