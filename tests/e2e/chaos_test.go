package e2e

import (
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/goray/goray/internal/store"
	"github.com/goray/goray/internal/testcluster"
)

// TestChaos runs a job of thousands of tasks and a set of stateful actors
// with restarts on four raylets while it SIGKILLs and restarts random
// raylets, SIGSTOPs one past the node timeout and resumes it, and restarts
// the head once. The driver then checks that every task result is present
// and correct and that every at-most-once actor call ran at most once. The
// driver's own raylet (r1) is spared: a driver does not outlive its node.
func TestChaos(t *testing.T) {
	const chaosSeconds = 40
	c := newCluster(t)
	// Runs after every process of the test was stopped: no object store
	// directory of any raylet the test started (killed ones included) is
	// left; a killed raylet's is removed by the next raylet that starts.
	t.Cleanup(func() {
		pids := map[int]bool{}
		for _, n := range c.Nodes() {
			pids[n.Pid()] = true
		}
		if left := ownedDirs(store.BaseDir(""), pids); len(left) > 0 {
			t.Errorf("object store directories left behind by the test's raylets: %v", left)
		}
	})
	head := c.StartHeadOnly("127.0.0.1:0", "--node-timeout", "3s")
	r1 := c.Join("r1", `{"CPU":2}`)
	victims := []*node{c.Join("r2", `{"CPU":2}`), c.Join("r3", `{"CPU":2}`), c.Join("r4", `{"CPU":2}`)}
	ledger := filepath.Join(c.Dir, "ledger")
	d := testcluster.StartProc(t, "driver chaos", bins.driver, nil, []string{
		"GORAY_ADDRESS=" + r1.Addr, "GORAY_TOKEN_FILE=" + c.TokenFile,
		"E2E_MODE=chaos", "E2E_LEDGER=" + ledger, "E2E_VICTIMS=" + victims[0].NodeID + "," + victims[1].NodeID + "," + victims[2].NodeID, "E2E_CHAOS_SECONDS=" + itoa(chaosSeconds), "E2E_TIMEOUT=5m", "GORAY_LOG_LEVEL=info",
	}, false)
	d.WaitLine(t, driverTimeout, "READY line", func(l string) bool { return l == "READY" })

	seed := uint64(time.Now().UnixNano())
	t.Logf("chaos seed %d", seed)
	rng := rand.New(rand.NewPCG(seed, 1))
	var kills, stops, headRestarts, restarts int
	start := time.Now()
	stopped, headDone := false, false
	fresh := 0
	replace := func(i int) {
		fresh++
		victims[i] = c.Join("r"+itoa(4+fresh), `{"CPU":2}`)
		restarts++
	}
	for time.Since(start) < (chaosSeconds-6)*time.Second {
		if _, ok, _ := d.Stdout.Find(func(l string) bool { return l == "CHAOS DONE" }); ok || d.Exited() {
			break
		}
		elapsed := time.Since(start)
		i := rng.IntN(len(victims))
		switch {
		case !stopped && elapsed > 10*time.Second:
			// Stop a raylet past the node timeout: the head declares it
			// dead, its workers fence themselves off; then resume it.
			stopped = true
			v := victims[i]
			t.Logf("%5.1fs SIGSTOP %s (%s)", elapsed.Seconds(), v.Name(), v.NodeID)
			v.Signal(t, syscall.SIGSTOP)
			time.Sleep(6 * time.Second) // the fault's duration: past the 3 s node timeout
			t.Logf("%5.1fs SIGCONT %s", time.Since(start).Seconds(), v.Name())
			v.Signal(t, syscall.SIGCONT)
			stops++
			// Declared dead while stopped, it must come back as a new
			// incarnation: a new ready line with a new node ID.
			line := v.WaitLine(t, 20*time.Second, "a new incarnation's ready line", func(l string) bool {
				m := testcluster.RayletReadyLine.FindStringSubmatch(l)
				return m != nil && m[2] != v.NodeID
			})
			newID := testcluster.RayletReadyLine.FindStringSubmatch(line)[2]
			t.Logf("%5.1fs %s rejoined as a new incarnation %s (was %s)", time.Since(start).Seconds(), v.Name(), newID, v.NodeID)
			v.NodeID = newID
		case !headDone && elapsed > 20*time.Second:
			headDone = true
			t.Logf("%5.1fs SIGKILL the head; restarting it at %s", elapsed.Seconds(), head.Addr)
			head.Signal(t, syscall.SIGKILL)
			head.Wait(t, stopTimeout)
			time.Sleep(time.Second) // the fault's duration: the head stays down a while
			head = c.StartHeadOnly(head.Addr, "--node-timeout", "3s")
			headRestarts++
		default:
			v := victims[i]
			t.Logf("%5.1fs SIGKILL %s (%s); starting a replacement", elapsed.Seconds(), v.Name(), v.NodeID)
			v.Signal(t, syscall.SIGKILL)
			v.Wait(t, stopTimeout)
			kills++
			replace(i)
		}
		// The pace of the faults (not a wait for anything).
		time.Sleep(time.Duration(2000+rng.IntN(2000)) * time.Millisecond)
	}
	t.Logf("chaos over after %s: %d raylet kills (+%d replacements), %d SIGSTOPs, %d head restarts", time.Since(start).Round(time.Second), kills, restarts, stops, headRestarts)
	if err := d.Wait(t, 4*time.Minute); err != nil {
		t.Fatalf("chaos driver: got %v, want exit status 0", err)
	}
	line, ok, _ := d.Stdout.Find(func(l string) bool { return strings.HasPrefix(l, "CHAOS OK ") })
	if !ok {
		t.Fatalf("driver stdout: got %q, want a CHAOS OK line", d.Stdout.String())
	}
	for _, l := range strings.Split(d.Stdout.String(), "\n") {
		if strings.HasPrefix(l, "ACTORS ON") || strings.HasPrefix(l, "TASKS BY NODE") {
			t.Logf("driver: %s", l)
		}
	}
	t.Logf("driver: %s", line)
	stderr := d.Stderr.String()
	t.Logf("driver log: %d task retries, %d objects rebuilt, %d lost-object reads",
		strings.Count(stderr, "retrying task"), strings.Count(stderr, "rebuilding a lost object"), strings.Count(stderr, "object lost at its location"))
	if kills == 0 || stops == 0 || headRestarts == 0 {
		t.Fatalf("faults injected: %d kills, %d stops, %d head restarts; want each at least once", kills, stops, headRestarts)
	}
}

func itoa(n int) string { return strconv.Itoa(n) }

// ownedDirs lists the directories in base whose owner file names one of pids.
func ownedDirs(base string, pids map[int]bool) []string {
	entries, _ := os.ReadDir(base)
	var out []string
	for _, e := range entries {
		b, err := os.ReadFile(filepath.Join(base, e.Name(), ".goray-owner"))
		if err != nil {
			continue
		}
		var pid int
		if _, err := fmt.Sscan(string(b), &pid); err == nil && pids[pid] {
			out = append(out, e.Name())
		}
	}
	return out
}
