package coord_test

import (
	"bufio"
	"context"
	"fmt"
	"math/rand/v2"
	"net"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/goray/goray/internal/testcluster"
)

// Lock safety sizes (the issue's): 8 processes, 200 acquisitions each,
// holders SIGKILLed at random while they hold the lock.
const (
	lockProcs        = 8
	lockAcquisitions = 200
	lockKills        = 10
	lockTTL          = "1s"
)

// resource is the guarded resource: it accepts an operation only with a
// fencing token at least the largest it has seen (ENTER: larger), counts
// the increments made under the lock, and checks that a new holder enters
// only when the previous one left or its session ended.
type resource struct {
	t     *testing.T
	admin *clientv3.Client
	// kill is called (outside mu) with a holder to SIGKILL while it holds.
	kill func(pid int)

	mu sync.Mutex
	// guarded by mu:
	maxToken  int64
	inside    *holder // the holder that entered and has not left
	counter   int
	entered   int
	exited    int
	stale     int
	killAt    map[int]bool // kill the holder of the n-th entry
	killedAt  map[int64]time.Time
	delays    []time.Duration
	perSlot   map[string]int
	violation string
}

type holder struct {
	token, lease int64
	pid          int
}

func (r *resource) serve(l net.Listener) {
	var wg sync.WaitGroup
	defer wg.Wait()
	for {
		conn, err := l.Accept()
		if err != nil {
			return
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer conn.Close()
			sc := bufio.NewScanner(conn)
			for sc.Scan() {
				reply, kill := r.handle(sc.Text())
				if kill != 0 {
					r.kill(kill) // the holder dies holding the lock
					return
				}
				fmt.Fprintln(conn, reply)
			}
		}()
	}
}

// handle serves one "STEP token lease pid slot" line.
func (r *resource) handle(line string) (string, int) {
	f := strings.Fields(line)
	if len(f) != 5 {
		return "BAD", 0
	}
	token, _ := strconv.ParseInt(f[1], 10, 64)
	lease, _ := strconv.ParseInt(f[2], 10, 64)
	pid, _ := strconv.Atoi(f[3])
	r.mu.Lock()
	defer r.mu.Unlock()
	switch f[0] {
	case "ENTER":
		if token <= r.maxToken {
			r.stale++
			return "STALE", 0
		}
		if prev := r.inside; prev != nil {
			// The previous holder never left: its session must have ended
			// before this one got the lock.
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			ttl, err := r.admin.TimeToLive(ctx, clientv3.LeaseID(prev.lease))
			cancel()
			if err != nil || ttl.TTL > 0 {
				r.violation = fmt.Sprintf("token %d (pid %d) entered while token %d (pid %d) was inside with its session alive (ttl %v, %v)", token, pid, prev.token, prev.pid, ttl, err)
			}
			if at, ok := r.killedAt[prev.token]; ok {
				r.delays = append(r.delays, time.Since(at))
			}
		}
		r.maxToken = token
		r.inside = &holder{token: token, lease: lease, pid: pid}
		r.entered++
		r.perSlot[f[4]]++
		if r.killAt[r.entered] {
			r.killedAt[token] = time.Now()
			return "", pid
		}
		return "OK", 0
	case "INCR":
		if token < r.maxToken {
			r.stale++
			return "STALE", 0
		}
		r.counter++
		return "OK", 0
	case "EXIT":
		if token < r.maxToken {
			r.stale++
			return "STALE", 0
		}
		r.inside = nil
		r.exited++
		return "OK", 0
	}
	return "BAD", 0
}

// TestLockSafety: 8 processes take one lock 200 times each, and a holder
// is SIGKILLed at random entries while it holds it (then a new process
// takes its place for the rest of its acquisitions). The resource never
// sees two holders at once (a holder that never left must have lost its
// session before the next one entered), its tokens only grow, no increment
// is lost, and each acquisition after a kill waits for the session's
// expiry (the measured delays are logged).
func TestLockSafety(t *testing.T) {
	start := time.Now()
	c := testcluster.NewProcesses(t, bins.raylet, bins.dir)
	c.StartHeadOnly("127.0.0.1:0")
	creds := readCreds(t, c.TokenFile)
	admin, err := clientv3.New(clientv3.Config{Endpoints: []string{creds.endpoints}, Username: creds.user, Password: creds.password, DialTimeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer admin.Close()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	total := lockProcs * lockAcquisitions
	killAt := map[int]bool{}
	for len(killAt) < lockKills {
		killAt[50+rand.IntN(total-100)] = true
	}
	r := &resource{t: t, admin: admin, killAt: killAt, killedAt: map[int64]time.Time{}, perSlot: map[string]int{}}
	r.kill = func(pid int) {
		syscall.Kill(pid, syscall.SIGKILL) // a process this test started
	}
	served := make(chan struct{})
	go func() { r.serve(lis); close(served) }()
	defer func() { lis.Close(); <-served }()

	startSlot := func(slot string, n int) *testcluster.Proc {
		p := startClient(t, "locker "+slot, append(creds.env(), "COORD_MODE=locker", "COORD_SLOT="+slot,
			"COORD_ACQUISITIONS="+strconv.Itoa(n), "COORD_TTL="+lockTTL, "COORD_RESOURCE="+lis.Addr().String()), false)
		return p
	}
	type slotProc struct {
		slot string
		p    *testcluster.Proc
	}
	var running []slotProc
	for i := range lockProcs {
		s := strconv.Itoa(i)
		running = append(running, slotProc{s, startSlot(s, lockAcquisitions)})
	}
	restarts := 0
	for len(running) > 0 {
		sp := running[0]
		running = running[1:]
		err := sp.p.Wait(t, 10*time.Minute)
		if err == nil {
			continue
		}
		if sp.p.ExitCode() != -1 { // not a signal: the client failed
			t.Fatalf("%s: %v\n%s", sp.p.Name(), err, sp.p.Stderr.String())
		}
		// Killed holding the lock: its entry counted; a new process does
		// the rest of the slot's acquisitions.
		r.mu.Lock()
		left := lockAcquisitions - r.perSlot[sp.slot]
		r.mu.Unlock()
		restarts++
		if left > 0 {
			running = append(running, slotProc{sp.slot, startSlot(sp.slot, left)})
		}
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.violation != "" {
		t.Fatal(r.violation)
	}
	if r.entered != total {
		t.Fatalf("entries: got %d, want %d", r.entered, total)
	}
	if want := total - lockKills; r.counter != want || r.exited != want {
		t.Fatalf("increments %d and exits %d: want %d each (every holder that was not killed)", r.counter, r.exited, want)
	}
	if restarts != lockKills || len(r.delays) != lockKills {
		t.Fatalf("killed holders: got %d restarts and %d measured hand-overs, want %d", restarts, len(r.delays), lockKills)
	}
	slices.Sort(r.delays)
	t.Logf("%d processes x %d acquisitions, %d holders SIGKILLed while holding (session TTL %s): next holder entered after %v (min %v, median %v, max %v); %d stale-token refusals; %s in all",
		lockProcs, lockAcquisitions, lockKills, lockTTL, r.delays, r.delays[0], r.delays[len(r.delays)/2], r.delays[len(r.delays)-1], r.stale, time.Since(start).Round(time.Second))
}
