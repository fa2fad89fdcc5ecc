// Package ha tests a cluster of several heads (issue 13) as real processes:
// three `raylet --head` processes, each embedding a member of one etcd
// cluster, raylets and drivers given every head's address; the leader is
// SIGKILLed and SIGSTOPped while a driver works.
package ha

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"go.uber.org/goleak"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/goray/goray/internal/rpc"
	"github.com/goray/goray/internal/testcluster"
	pb "github.com/goray/goray/proto/goray/v1"
)

var bins struct{ raylet, driver string }

func TestMain(m *testing.M) {
	code := testMain(m)
	if code == 0 {
		if err := goleak.Find(); err != nil {
			fmt.Fprintln(os.Stderr, "ha: goroutines left after the tests:", err)
			code = 1
		}
	}
	os.Exit(code)
}

func testMain(m *testing.M) int {
	dir, err := os.MkdirTemp("", "goray-ha-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, "ha:", err)
		return 1
	}
	defer os.RemoveAll(dir)
	bins.raylet, bins.driver = filepath.Join(dir, "raylet"), filepath.Join(dir, "driver")
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	out, err := exec.CommandContext(ctx, "go", "env", "GOMOD").Output()
	if err != nil {
		fmt.Fprintln(os.Stderr, "ha: go env GOMOD:", err)
		return 1
	}
	root := filepath.Dir(strings.TrimSpace(string(out)))
	for _, b := range [][2]string{{bins.raylet, "./cmd/raylet"}, {bins.driver, "./tests/ha/testdata/driver"}} {
		cmd := exec.CommandContext(ctx, "go", "build", "-o", b[0], b[1])
		cmd.Dir = root
		if out, err := cmd.CombinedOutput(); err != nil {
			fmt.Fprintf(os.Stderr, "ha: go build %s: %v\n%s", b[1], err, out)
			return 1
		}
	}
	return m.Run()
}

// Timeouts of the tests' waits (generous: the machine is shared).
const (
	readyTimeout    = 90 * time.Second
	failoverTimeout = 30 * time.Second
	driverTimeout   = 5 * time.Minute
)

// head is one head process of the cluster and what restarts it.
type head struct {
	name string
	addr string // its goray address
	args []string
	proc *testcluster.Proc
}

// cluster is three heads (each with a node) and the raylets joined to them.
type cluster struct {
	t         *testing.T
	dir       string
	tokenFile string
	token     string
	heads     []*head
	raylets   []*testcluster.Proc
}

// freePorts are n loopback ports nobody listens on now.
func freePorts(t *testing.T, n int) []string {
	t.Helper()
	var out []string
	var lns []net.Listener
	for range n {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		lns = append(lns, ln)
		out = append(out, ln.Addr().String())
	}
	for _, ln := range lns {
		ln.Close()
	}
	return out
}

// startCluster starts three heads (concurrently: each waits for a quorum)
// and raylets joined to all three. The raylets have a resource "w" the
// heads' nodes lack, so that the drivers' actors (which need it) do not die
// with a killed head's node: a call in flight to an actor whose node dies
// fails, at most once, which the chaos driver would count as lost.
func startCluster(t *testing.T, raylets int, headArgs ...string) *cluster {
	t.Helper()
	dir := t.TempDir()
	t.Cleanup(func() { testcluster.CheckNoLeaks(t, dir, filepath.Dir(bins.raylet)) })
	c := &cluster{t: t, dir: dir, tokenFile: filepath.Join(dir, "token")}
	tok, err := rpc.GenerateToken()
	if err != nil {
		t.Fatal(err)
	}
	if err := rpc.WriteTokenFile(c.tokenFile, tok); err != nil {
		t.Fatal(err)
	}
	c.token = tok
	ports := freePorts(t, 9)
	var members []string
	for i := range 3 {
		members = append(members, fmt.Sprintf("h%d=http://%s", i+1, ports[3*i+2]))
	}
	for i := range 3 {
		name := fmt.Sprintf("h%d", i+1)
		h := &head{name: name, addr: ports[3*i], args: append([]string{"--head",
			"--listen", ports[3*i], "--etcd-listen", ports[3*i+1], "--etcd-peer-listen", ports[3*i+2],
			"--etcd-name", name, "--etcd-initial-cluster", strings.Join(members, ","),
			"--data-dir", filepath.Join(dir, name), "--token-file", c.tokenFile, "--log-level", "info",
			"--resources", `{"CPU":1}`}, headArgs...)}
		c.heads = append(c.heads, h)
	}
	var wg sync.WaitGroup
	for _, h := range c.heads {
		h.proc = testcluster.StartProc(t, "head "+h.name, bins.raylet, h.args, nil, false)
	}
	for _, h := range c.heads {
		wg.Go(func() { c.waitReady(h) })
	}
	wg.Wait()
	for i := range raylets {
		name := fmt.Sprintf("r%d", i+1)
		p := testcluster.StartProc(t, "raylet "+name, bins.raylet, []string{"--address", c.addresses(),
			"--listen", "127.0.0.1:0", "--token-file", c.tokenFile, "--data-dir", filepath.Join(dir, name),
			"--log-level", "info", "--resources", `{"CPU":2,"w":100}`}, nil, false)
		p.WaitLine(t, readyTimeout, "ready line", testcluster.RayletReadyLine.MatchString)
		c.raylets = append(c.raylets, p)
	}
	t.Cleanup(c.stop)
	return c
}

func (c *cluster) waitReady(h *head) {
	h.proc.WaitLine(c.t, readyTimeout, "ready line of head "+h.name, testcluster.RayletReadyLine.MatchString)
}

// restart starts head h again on its address and data dir.
func (c *cluster) restart(h *head) {
	c.t.Helper()
	h.proc = testcluster.StartProc(c.t, "head "+h.name, bins.raylet, h.args, nil, false)
	c.waitReady(h)
}

func (c *cluster) stop() {
	for _, p := range c.raylets {
		p.Stop()
	}
	for _, h := range c.heads {
		h.proc.Stop()
	}
}

// addresses are every head's address, comma-separated.
func (c *cluster) addresses() string {
	var a []string
	for _, h := range c.heads {
		a = append(a, h.addr)
	}
	return strings.Join(a, ",")
}

// leader is the head that answers head calls now (others refuse them);
// nil when none does.
func (c *cluster) leader(ctx context.Context) *head {
	for _, h := range c.heads {
		if h.proc.Exited() {
			continue
		}
		cc, err := rpc.Dial(h.addr, c.token)
		if err != nil {
			continue
		}
		cctx, cancel := context.WithTimeout(ctx, time.Second)
		_, err = rpc.NewHeadClient(cc).ListNodes(cctx, &pb.ListNodesRequest{})
		cancel()
		cc.Close()
		if err == nil {
			return h
		}
	}
	return nil
}

// waitLeader waits until a head other than not leads.
func (c *cluster) waitLeader(not *head) *head {
	c.t.Helper()
	ctx, cancel := context.WithTimeout(c.t.Context(), failoverTimeout)
	defer cancel()
	for {
		if l := c.leader(ctx); l != nil && l != not {
			return l
		}
		select {
		case <-ctx.Done():
			c.t.Fatalf("no head other than %v leads within %s", not, failoverTimeout)
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// aliveNodes asks the cluster (through any head) how many addresses have
// an alive node (a raylet the head declared dead joins again as a new node
// at the same address).
func (c *cluster) aliveNodes(ctx context.Context) (int, error) {
	hc, err := rpc.DialHead(c.addresses(), c.token)
	if err != nil {
		return 0, err
	}
	defer hc.Close()
	var resp *pb.ListNodesResponse
	for {
		// A head that has just resumed may not know the leader yet: ask
		// again, as every client does.
		if resp, err = rpc.NewHeadClient(hc).ListNodes(ctx, &pb.ListNodesRequest{}); err == nil || !rpc.HeadUnreachable(err) || ctx.Err() != nil {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if err != nil {
		return 0, err
	}
	alive := map[string]bool{}
	var desc []string
	for _, nd := range resp.GetNodes() {
		if nd.GetAlive() {
			alive[nd.GetAddress()] = true
		}
		desc = append(desc, fmt.Sprintf("%x@%s alive=%t", nd.GetNodeId()[:4], nd.GetAddress(), nd.GetAlive()))
	}
	c.t.Logf("nodes: %s", strings.Join(desc, "; "))
	return len(alive), nil
}

func (c *cluster) driver(name string, env ...string) *testcluster.Proc {
	return testcluster.StartProc(c.t, "driver "+name, bins.driver, nil,
		append([]string{"GORAY_ADDRESS=" + c.rayletAddresses(), "GORAY_TOKEN_FILE=" + c.tokenFile}, env...), true)
}

// rayletAddresses are the joined raylets' addresses (drivers connect to
// a raylet), from their ready lines.
func (c *cluster) rayletAddresses() string {
	var a []string
	for _, p := range c.raylets {
		line, ok, _ := p.Stdout.Find(testcluster.RayletReadyLine.MatchString)
		if ok {
			a = append(a, testcluster.RayletReadyLine.FindStringSubmatch(line)[1])
		}
	}
	return strings.Join(a, ",")
}

// TestStandbysNameTheLeader: a standby refuses head calls with
// Unavailable and the leader's address; a HeadConn given every head
// reaches the leader whichever it tries first.
func TestStandbysNameTheLeader(t *testing.T) {
	c := startCluster(t, 0)
	l := c.waitLeader(nil)
	for _, h := range c.heads {
		cc, err := rpc.Dial(h.addr, c.token)
		if err != nil {
			t.Fatal(err)
		}
		_, err = rpc.NewHeadClient(cc).ListNodes(t.Context(), &pb.ListNodesRequest{})
		cc.Close()
		if h == l {
			if err != nil {
				t.Errorf("leader %s: ListNodes: %v", h.name, err)
			}
			continue
		}
		if status.Code(err) != codes.Unavailable || !strings.Contains(err.Error(), l.addr) {
			t.Errorf("standby %s: ListNodes: got %v, want Unavailable naming the leader %s", h.name, err, l.addr)
		}
	}
	for i := range c.heads {
		order := slices.Concat(c.heads[i:], c.heads[:i])
		var addrs []string
		for _, h := range order {
			addrs = append(addrs, h.addr)
		}
		hc, err := rpc.DialHead(strings.Join(addrs, ","), c.token)
		if err != nil {
			t.Fatal(err)
		}
		resp, err := rpc.NewHeadClient(hc).ListNodes(t.Context(), &pb.ListNodesRequest{})
		hc.Close()
		if err != nil {
			t.Fatalf("HeadConn starting at %s: %v", order[0].name, err)
		}
		if got := len(resp.GetNodes()); got != 3 {
			t.Errorf("HeadConn starting at %s: got %d nodes, want the 3 heads' nodes", order[0].name, got)
		}
	}
}

// TestFailoverChaos: a driver runs 3,000 tasks, 330 at-most-once actor
// calls, 100 spawns and 10 actor restarts (a method that kills its worker)
// while the leader head is SIGKILLed three times (and
// restarted on its data dir) and another head is SIGSTOPped for 20 s.
// Every result is present and correct (the driver checks each), no call ran
// twice, the job is not finished, and a resumed deposed leader does not
// act: it refuses head calls.
func TestFailoverChaos(t *testing.T) {
	c := startCluster(t, 3)
	d := c.driver("work", "HA_MODE=work", "HA_ROUNDS=100")
	round := func(n int) {
		t.Helper()
		d.WaitLine(t, driverTimeout, fmt.Sprintf("ROUND %d", n), func(l string) bool { return l == fmt.Sprintf("ROUND %d", n) })
	}
	round(5)
	for k := range 3 {
		l := c.waitLeader(nil)
		t.Logf("kill %d: SIGKILL the leader %s", k+1, l.name)
		l.proc.Signal(t, syscall.SIGKILL)
		l.proc.Wait(t, 10*time.Second)
		next := c.waitLeader(l)
		t.Logf("kill %d: %s leads", k+1, next.name)
		round(20 * (k + 1))
		c.restart(l)
	}
	// SIGSTOP the leader for 20 s: another takes over; resumed, the old one
	// refuses head calls.
	l := c.waitLeader(nil)
	t.Logf("SIGSTOP the leader %s for 20s", l.name)
	l.proc.Signal(t, syscall.SIGSTOP)
	next := c.waitLeader(l)
	t.Logf("%s leads while %s is stopped", next.name, l.name)
	time.Sleep(20 * time.Second) // the pause IS the test
	l.proc.Signal(t, syscall.SIGCONT)
	cc, err := rpc.Dial(l.addr, c.token)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	_, err = rpc.NewHeadClient(cc).ListNodes(ctx, &pb.ListNodesRequest{})
	cancel()
	cc.Close()
	if err == nil {
		t.Errorf("the resumed deposed leader %s answered a head call; want it refused", l.name)
	}
	line := d.WaitLine(t, driverTimeout, "HA OK line", func(l string) bool { return strings.HasPrefix(l, "HA OK ") })
	if want := "HA OK tasks=3000 calls=330 spawns=100 restarts=10"; line != want {
		t.Errorf("driver: got %q, want %q", line, want)
	}
	if err := d.Wait(t, 30*time.Second); err != nil {
		t.Errorf("driver: %v\n%s", err, testcluster.Tail(d.Stderr.String()))
	}
	if code := d.ExitCode(); code != 0 {
		t.Errorf("driver exited %d: %s", code, testcluster.Tail(d.Stderr.String()))
	}
	// Every raylet process, the three heads' nodes included, is an alive
	// node again (one declared dead while its head was stopped has joined
	// again as a new node).
	ctx, cancel = context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	for {
		n, err := c.aliveNodes(ctx)
		if err == nil && n == 6 {
			break
		}
		if ctx.Err() != nil {
			t.Errorf("addresses with an alive node after the chaos: got %d (%v), want 6", n, err)
			break
		}
		time.Sleep(time.Second)
	}
}

// TestFailoverTime measures, over 10 SIGKILLs of the leader, the time from
// the kill to the next actor placed and called by a driver that spawns in
// a loop. The figures are logged (docs/fault-tolerance.md quotes them); the
// test fails only if a failover does not complete at all.
func TestFailoverTime(t *testing.T) {
	c := startCluster(t, 1)
	d := c.driver("spawnloop", "HA_MODE=spawnloop")
	placedAfter := func(at time.Time) time.Duration {
		t.Helper()
		var when time.Time
		d.WaitLine(t, failoverTimeout, "PLACED line after the kill", func(l string) bool {
			var ns int64
			if _, err := fmt.Sscanf(l, "PLACED %d", &ns); err != nil {
				return false
			}
			when = time.Unix(0, ns)
			return when.After(at)
		})
		return when.Sub(at)
	}
	placedAfter(time.Now())
	var times []time.Duration
	for k := range 10 {
		l := c.waitLeader(nil)
		placedAfter(time.Now()) // placing works before this kill
		killed := time.Now()
		l.proc.Signal(t, syscall.SIGKILL)
		took := placedAfter(killed)
		times = append(times, took)
		t.Logf("kill %d of the leader %s: the next actor placed after %s", k+1, l.name, took.Round(time.Millisecond))
		l.proc.Wait(t, 10*time.Second)
		c.restart(l)
	}
	slices.Sort(times)
	t.Logf("failover (kill → next actor placed) over %d kills: median %s, min %s, max %s",
		len(times), times[len(times)/2].Round(time.Millisecond), times[0].Round(time.Millisecond), times[len(times)-1].Round(time.Millisecond))
	d.Stdin.Close()
	if err := d.Wait(t, 30*time.Second); err != nil && !errors.Is(err, context.Canceled) {
		t.Errorf("driver: %v", err)
	}
}
