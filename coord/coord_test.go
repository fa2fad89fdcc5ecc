package coord_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/goleak"

	"github.com/goray/goray/coord"
	"github.com/goray/goray/internal/core"
	"github.com/goray/goray/internal/embed"
	"github.com/goray/goray/internal/testenv"
	"github.com/goray/goray/internal/testwait"
	pb "github.com/goray/goray/proto/goray/v1"
	"github.com/goray/goray/runtime"
)

// helperEnv makes the test binary a helper process (see TestMain).
const helperEnv = "COORD_TEST_HELPER"

// head is the cluster the tests run on: a head with its node in this
// process, to which the test process connects as a driver (runtime.Init), so
// coord.Connect finds it through the runtime.
var head *embed.Server

func TestMain(m *testing.M) {
	if mode := os.Getenv(helperEnv); mode != "" {
		os.Exit(helper(mode))
	}
	runtime.ServeIfWorker()
	os.Exit(run(m))
}

func run(m *testing.M) int {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cfg := embed.Config{Head: true, LazyCoordination: true}
	cfg.Listen, cfg.Logger = "127.0.0.1:0", slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	var err error
	if head, err = embed.Start(ctx, cfg); err != nil {
		fmt.Fprintln(os.Stderr, "start the head:", err)
		return 1
	}
	if err := runtime.Init(ctx, runtime.WithAddress(head.Address()), runtime.WithToken(head.Token())); err != nil {
		head.Close()
		fmt.Fprintln(os.Stderr, "runtime.Init:", err)
		return 1
	}
	code := m.Run()
	runtime.Shutdown()
	head.Close()
	if code == 0 {
		if err := goleak.Find(); err != nil {
			fmt.Fprintln(os.Stderr, "goroutines left after the tests and the cluster stopped:", err)
			code = 1
		}
	}
	return code
}

func runtimeAddress(*testing.T) string { return head.Address() }

// helper is a process that holds a session: it puts the key in
// COORD_KEY under its session (and, for "lock", takes the lock COORD_LOCK),
// prints READY and waits to be killed.
func helper(mode string) int {
	ctx := context.Background()
	eps := strings.Split(os.Getenv("COORD_ENDPOINTS"), ",")
	c, err := coord.Connect(ctx, coord.WithEndpoints(eps, os.Getenv("COORD_USER"), os.Getenv("COORD_PASSWORD")))
	if err != nil {
		fmt.Println("ERR", err)
		return 1
	}
	s, err := c.NewSession(ctx, coord.WithTTL(time.Second))
	if err != nil {
		fmt.Println("ERR", err)
		return 1
	}
	if _, err := c.Put(ctx, os.Getenv("COORD_KEY"), []byte("held"), coord.WithSession(s)); err != nil {
		fmt.Println("ERR", err)
		return 1
	}
	if mode == "lock" || mode == "pause" {
		l, err := s.Lock(ctx, os.Getenv("COORD_LOCK"))
		if err != nil {
			fmt.Println("ERR", err)
			return 1
		}
		fmt.Println("TOKEN", l.Token())
	}
	fmt.Println("READY")
	if mode == "pause" {
		// Stopped (SIGSTOP) past its TTL and continued: the session is
		// lost, and what it held is gone.
		<-s.Done()
		_, err := c.Put(ctx, os.Getenv("COORD_KEY"), []byte("again"), coord.WithSession(s))
		fmt.Println("LOST", errors.Is(err, runtime.ErrSessionLost), err)
		return 0
	}
	select {}
}

func connect(t *testing.T, opts ...coord.Option) *coord.Client {
	t.Helper()
	c, err := coord.Connect(testenv.Ctx(t, 30*time.Second), opts...)
	if err != nil {
		t.Fatalf("connect: %v", err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// creds are the read-write credentials the head hands out.
func creds(t *testing.T, readOnly bool) *pb.GetCoordinationResponse {
	t.Helper()
	cw, err := core.Current()
	if err != nil {
		t.Fatal(err)
	}
	resp, err := cw.Head().GetCoordination(testenv.Ctx(t, 30*time.Second), &pb.GetCoordinationRequest{ReadOnly: readOnly})
	if err != nil {
		t.Fatal(err)
	}
	return resp
}

func TestKV(t *testing.T) {
	ctx := testenv.Ctx(t, 30*time.Second)
	c := connect(t)
	rev, err := c.Put(ctx, "/t/kv/a", []byte("1"))
	if err != nil {
		t.Fatal(err)
	}
	kv, err := c.Get(ctx, "/t/kv/a")
	if err != nil || string(kv.Value) != "1" || kv.ModRevision != rev || kv.CreateRevision != rev || kv.Version != 1 {
		t.Fatalf("get: got %+v, %v; want value 1 at revision %d", kv, err, rev)
	}
	if _, err := c.Get(ctx, "/t/kv/missing"); !errors.Is(err, runtime.ErrNotFound) {
		t.Fatalf("get missing: got %v, want ErrNotFound", err)
	}
	// Compare-and-swap: the right revision wins, a stale one loses and
	// sees the current value.
	rev2, ok, _, err := c.CompareAndSwap(ctx, "/t/kv/a", rev, []byte("2"))
	if err != nil || !ok {
		t.Fatalf("CAS at the current revision: ok %t, %v", ok, err)
	}
	_, ok, cur, err := c.CompareAndSwap(ctx, "/t/kv/a", rev, []byte("3"))
	if err != nil || ok || string(cur.Value) != "2" || cur.ModRevision != rev2 {
		t.Fatalf("CAS at a stale revision: got ok %t, current %+v, %v; want false and value 2 at %d", ok, cur, err, rev2)
	}
	if _, ok, _, err := c.CompareAndSwap(ctx, "/t/kv/new", 0, []byte("x")); err != nil || !ok {
		t.Fatalf("CAS create: ok %t, %v", ok, err)
	}
	if _, ok, _, err := c.CompareAndSwap(ctx, "/t/kv/new", 0, []byte("y")); err != nil || ok {
		t.Fatalf("CAS create of an existing key: got ok %t, %v; want false", ok, err)
	}
	// History: the value at the first revision.
	if old, err := c.GetAt(ctx, "/t/kv/a", rev); err != nil || string(old.Value) != "1" {
		t.Fatalf("get at %d: got %+v, %v; want 1", rev, old, err)
	}
	// Prefix range, in key order.
	for _, k := range []string{"/t/r/b", "/t/r/a", "/t/r/c", "/t/rx"} {
		if _, err := c.Put(ctx, k, []byte(k)); err != nil {
			t.Fatal(err)
		}
	}
	kvs, _, err := c.Range(ctx, "/t/r/", 0)
	if err != nil || len(kvs) != 3 || kvs[0].Key != "/t/r/a" || kvs[2].Key != "/t/r/c" {
		t.Fatalf("range: got %+v, %v; want /t/r/a, b, c", kvs, err)
	}
	if n, _, err := c.DeletePrefix(ctx, "/t/r/"); err != nil || n != 3 {
		t.Fatalf("delete prefix: got %d, %v; want 3", n, err)
	}
	if ok, _, err := c.Delete(ctx, "/t/kv/a"); err != nil || !ok {
		t.Fatalf("delete: %t %v", ok, err)
	}
	// Typed values.
	type conf struct{ Rate int }
	if _, err := coord.PutJSON(ctx, c, "/t/kv/json", conf{Rate: 7}); err != nil {
		t.Fatal(err)
	}
	if v, _, err := coord.GetJSON[conf](ctx, c, "/t/kv/json"); err != nil || v.Rate != 7 {
		t.Fatalf("GetJSON: got %+v, %v; want Rate 7", v, err)
	}
	if _, _, err := coord.GetJSON[conf](ctx, c, "/t/kv/new"); !errors.Is(err, runtime.ErrInvalidArgument) {
		t.Fatalf("GetJSON of a non-JSON value: got %v, want ErrInvalidArgument", err)
	}
}

// TestWatchResume: a watch resumed from revision R after its watcher went
// away sees every later change exactly once, in order; a compacted R gives
// ErrCompacted with the compact revision.
func TestWatchResume(t *testing.T) {
	ctx := testenv.Ctx(t, 60*time.Second)
	c := connect(t)
	const n = 50
	first, err := c.Put(ctx, "/t/w/k0", []byte("0"))
	if err != nil {
		t.Fatal(err)
	}
	// A watcher that reads 10 events and disconnects.
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	w := c.Watch(wctx, "/t/w/", coord.WithPrefix(), coord.FromRevision(first))
	var seen []int64
	for ev := range w.C {
		seen = append(seen, ev.Revision())
		if len(seen) == 1 {
			// Writes while the watcher runs and after it is gone.
			go func() {
				for i := 1; i < n; i++ {
					c.Put(ctx, fmt.Sprintf("/t/w/k%d", i%7), []byte(strconv.Itoa(i)))
				}
			}()
		}
		if len(seen) == 10 {
			cancel()
			break
		}
	}
	for range w.C { // drain what was in flight
	}
	if err := w.Err(); err != nil {
		t.Fatalf("watch ended with %v, want nil after cancel", err)
	}
	next := w.Next()
	if next != seen[len(seen)-1]+1 {
		t.Fatalf("Next: got %d, want %d", next, seen[len(seen)-1]+1)
	}
	testwait.Eventually(t, 20*time.Second, "all writes done", func() bool {
		_, rev, err := c.Range(ctx, "/t/w/", 1)
		return err == nil && rev >= first+n-1
	})
	// A new connection, resumed from next.
	c2 := connect(t)
	rctx, rcancel := context.WithCancel(ctx)
	defer rcancel()
	w2 := c2.Watch(rctx, "/t/w/", coord.WithPrefix(), coord.FromRevision(next))
	for ev := range w2.C {
		seen = append(seen, ev.Revision())
		if ev.Revision() == first+n-1 {
			break
		}
	}
	rcancel()
	for i, r := range seen {
		if r != first+int64(i) {
			t.Fatalf("event %d: got revision %d, want %d (every change once, in order): %v", i, r, first+int64(i), seen)
		}
	}
	if len(seen) != n {
		t.Fatalf("got %d events, want %d", len(seen), n)
	}

	// Compact past first: a watch from first is ErrCompacted with the
	// compact revision, and so is a read at it.
	compactAt := first + 20
	if err := rootCompact(ctx, t, c, compactAt); err != nil {
		t.Fatal(err)
	}
	w3 := c.Watch(ctx, "/t/w/", coord.WithPrefix(), coord.FromRevision(first))
	for range w3.C {
		t.Fatal("a watch from a compacted revision delivered an event")
	}
	var ge *runtime.Error
	if err := w3.Err(); !errors.Is(err, runtime.ErrCompacted) || !errors.As(err, &ge) || ge.Revision != compactAt {
		t.Fatalf("watch from a compacted revision: got %v (revision %d), want ErrCompacted with revision %d", err, ge.Revision, compactAt)
	}
	if _, err := c.GetAt(ctx, "/t/w/k1", first); !errors.Is(err, runtime.ErrCompacted) || !errors.As(err, &ge) || ge.Revision != compactAt {
		t.Fatalf("get at a compacted revision: got %v, want ErrCompacted with revision %d", err, compactAt)
	}
}

// rootCompact compacts the embedded member's history (the root user's
// right) through the head's admin client.
func rootCompact(ctx context.Context, t *testing.T, c *coord.Client, rev int64) error {
	adm := head.Coordination().Admin()
	_, err := adm.Compact(ctx, rev, clientv3.WithCompactPhysical())
	return err
}

// TestSessionDiesWithProcess: a key put under a process's session, and the
// lock it holds, vanish when the process is SIGKILLed, within the TTL; the
// next locker then gets a larger fencing token.
func TestSessionDiesWithProcess(t *testing.T) {
	ctx := testenv.Ctx(t, 60*time.Second)
	c := connect(t)
	rw := creds(t, false)
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), helperEnv+"=lock", "COORD_ENDPOINTS="+strings.Join(rw.GetEndpoints(), ","),
		"COORD_USER="+rw.GetUser(), "COORD_PASSWORD="+rw.GetPassword(), "COORD_KEY=/t/s/held", "COORD_LOCK=/t/s/lock")
	var out syncBuf
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	testwait.Eventually(t, 20*time.Second, "helper READY", func() bool { return strings.Contains(out.String(), "READY") || strings.Contains(out.String(), "ERR") })
	if !strings.Contains(out.String(), "READY") {
		t.Fatalf("helper: %s", out.String())
	}
	var helperToken int64
	fmt.Sscanf(out.String()[strings.Index(out.String(), "TOKEN"):], "TOKEN %d", &helperToken)
	if _, err := c.Get(ctx, "/t/s/held"); err != nil {
		t.Fatalf("the helper's key: %v", err)
	}
	// The lock is held: a try with a short acquire timeout times out.
	_, err := c.Lock(ctx, "/t/s/lock", coord.WithAcquireTimeout(200*time.Millisecond))
	if !errors.Is(err, runtime.ErrLockTimeout) || !errors.Is(err, runtime.ErrTimeout) || !strings.Contains(err.Error(), "held by") {
		t.Fatalf("lock held by the helper: got %v, want ErrLockTimeout naming the holder", err)
	}
	killed := time.Now()
	cmd.Process.Kill()
	cmd.Wait()
	l, err := c.Lock(ctx, "/t/s/lock", coord.WithAcquireTimeout(10*time.Second))
	if err != nil {
		t.Fatalf("lock after its holder died: %v", err)
	}
	delay := time.Since(killed)
	defer l.Unlock(ctx)
	if l.Token() <= helperToken {
		t.Fatalf("fencing token: got %d, want more than the dead holder's %d", l.Token(), helperToken)
	}
	if _, err := c.Get(ctx, "/t/s/held"); !errors.Is(err, runtime.ErrNotFound) {
		t.Fatalf("the dead helper's key: got %v, want ErrNotFound", err)
	}
	t.Logf("lock acquired %s after its holder (session TTL 1s) was SIGKILLed", delay.Round(time.Millisecond))
}

// TestSessionLostWhilePaused: a holder stopped (SIGSTOP) for longer than
// its TTL loses its session: its key and lock go, another process takes
// the lock with a larger token, and once continued the holder learns it
// lost the session (ErrSessionLost) instead of acting as if it held on.
func TestSessionLostWhilePaused(t *testing.T) {
	ctx := testenv.Ctx(t, 60*time.Second)
	c := connect(t)
	rw := creds(t, false)
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), helperEnv+"=pause", "COORD_ENDPOINTS="+strings.Join(rw.GetEndpoints(), ","),
		"COORD_USER="+rw.GetUser(), "COORD_PASSWORD="+rw.GetPassword(), "COORD_KEY=/t/p/held", "COORD_LOCK=/t/p/lock")
	var out syncBuf
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Signal(syscall.SIGCONT); cmd.Process.Kill(); cmd.Wait() })
	testwait.Eventually(t, 20*time.Second, "helper READY", func() bool { return strings.Contains(out.String(), "READY") || strings.Contains(out.String(), "ERR") })
	var helperToken int64
	if _, err := fmt.Sscanf(out.String()[strings.Index(out.String(), "TOKEN"):], "TOKEN %d", &helperToken); err != nil {
		t.Fatalf("helper: %s", out.String())
	}
	if err := cmd.Process.Signal(syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	l, err := c.Lock(ctx, "/t/p/lock", coord.WithAcquireTimeout(20*time.Second))
	if err != nil {
		t.Fatalf("lock while its holder is stopped: %v", err)
	}
	defer l.Unlock(ctx)
	if l.Token() <= helperToken {
		t.Fatalf("token %d, want more than the stopped holder's %d", l.Token(), helperToken)
	}
	if _, err := c.Get(ctx, "/t/p/held"); !errors.Is(err, runtime.ErrNotFound) {
		t.Fatalf("the stopped helper's key: got %v, want ErrNotFound", err)
	}
	cmd.Process.Signal(syscall.SIGCONT)
	testwait.Eventually(t, 20*time.Second, "helper LOST line", func() bool { return strings.Contains(out.String(), "LOST") })
	if !strings.Contains(out.String(), "LOST true") || !strings.Contains(out.String(), "start a new session") {
		t.Fatalf("the continued helper: got %q, want ErrSessionLost saying to start a new session", out.String())
	}
}

func TestLockInProcess(t *testing.T) {
	ctx := testenv.Ctx(t, 60*time.Second)
	c := connect(t)
	// Goroutines of one process sharing its session take turns, and each
	// holder's token is larger than the one before.
	var mu sync.Mutex
	inside, last := 0, int64(0)
	var wg sync.WaitGroup
	errc := make(chan error, 4)
	for g := 0; g < 4; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < 10; i++ {
				l, err := c.Lock(ctx, "/t/l/one")
				if err != nil {
					errc <- err
					return
				}
				mu.Lock()
				inside++
				if inside != 1 || l.Token() <= last {
					errc <- fmt.Errorf("holders %d, token %d after %d", inside, l.Token(), last)
				}
				last = l.Token()
				mu.Unlock()
				mu.Lock()
				inside--
				mu.Unlock()
				if err := l.Unlock(ctx); err != nil {
					errc <- err
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errc)
	for err := range errc {
		t.Fatal(err)
	}
	l, err := c.Lock(ctx, "/t/l/one")
	if err != nil {
		t.Fatal(err)
	}
	l.Unlock(ctx)
	if err := l.Unlock(ctx); !errors.Is(err, runtime.ErrInvalidArgument) {
		t.Fatalf("second unlock: got %v, want ErrInvalidArgument", err)
	}
}

func TestElection(t *testing.T) {
	ctx := testenv.Ctx(t, 60*time.Second)
	c := connect(t)
	s1, err := c.NewSession(ctx, coord.WithTTL(2*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	defer s1.Close()
	s2, err := c.NewSession(ctx, coord.WithTTL(2*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	defer s2.Close()
	e1, e2 := s1.Election("/t/e"), s2.Election("/t/e")
	if _, err := e1.Leader(ctx); !errors.Is(err, runtime.ErrNotFound) {
		t.Fatalf("leader of an empty election: got %v, want ErrNotFound", err)
	}
	octx, ocancel := context.WithCancel(ctx)
	defer ocancel()
	obs := e2.Observe(octx)
	l1, err := e1.Campaign(ctx, []byte("one"))
	if err != nil {
		t.Fatal(err)
	}
	if got := <-obs; string(got.Value) != "one" || got.Revision != l1.Revision {
		t.Fatalf("observed %+v, want one at %d", got, l1.Revision)
	}
	won := make(chan coord.Leader, 1)
	go func() {
		l, err := e2.Campaign(ctx, []byte("two"))
		if err != nil {
			t.Error(err)
		}
		won <- l
	}()
	if cur, err := e2.Leader(ctx); err != nil || string(cur.Value) != "one" {
		t.Fatalf("leader: got %+v, %v; want one", cur, err)
	}
	if err := e1.Proclaim(ctx, []byte("one-b")); err != nil {
		t.Fatal(err)
	}
	if got := <-obs; string(got.Value) != "one-b" {
		t.Fatalf("observed %+v, want one-b", got)
	}
	if err := e1.Resign(ctx); err != nil {
		t.Fatal(err)
	}
	l2 := <-won
	if l2.Revision <= l1.Revision {
		t.Fatalf("the second leader's revision %d is not larger than the first's %d", l2.Revision, l1.Revision)
	}
	if got := <-obs; string(got.Value) != "two" {
		t.Fatalf("observed %+v, want two", got)
	}
}

// TestBadInput: each a clear error, and the service keeps serving.
func TestBadInput(t *testing.T) {
	ctx := testenv.Ctx(t, 60*time.Second)
	c := connect(t)
	limit := c.Info().MaxRequestBytes
	big := bytes.Repeat([]byte("x"), int(limit))
	cases := []struct {
		name string
		do   func() error
		want error
		says string
	}{
		{"value over the limit", func() error { _, err := c.Put(ctx, "/t/b/v", big); return err }, runtime.ErrInvalidArgument, "request limit"},
		{"key over the limit", func() error { _, err := c.Put(ctx, string(big), nil); return err }, runtime.ErrInvalidArgument, "request limit"},
		{"raw request over the limit", func() error {
			_, err := c.Raw().Put(ctx, "/t/b/raw", string(big))
			return coord.Convert(err, "raw put")
		}, runtime.ErrInvalidArgument, "size limit"},
		{"empty key", func() error { _, err := c.Put(ctx, "", []byte("x")); return err }, runtime.ErrInvalidArgument, "empty key"},
		{"expired lease", func() error {
			s, err := c.NewSession(ctx, coord.WithTTL(time.Second))
			if err != nil {
				return err
			}
			s.Close() // revoked: as if it expired
			_, err = c.Put(ctx, "/t/b/lease", []byte("x"), coord.WithSession(s))
			return err
		}, runtime.ErrSessionLost, "start a new session"},
		{"lock through a dead session", func() error {
			s, err := c.NewSession(ctx, coord.WithTTL(time.Second))
			if err != nil {
				return err
			}
			s.Close()
			_, err = s.Lock(ctx, "/t/b/lock")
			return err
		}, runtime.ErrSessionLost, "start a new session"},
		{"empty watch key", func() error {
			w := c.Watch(ctx, "")
			for range w.C {
			}
			return w.Err()
		}, runtime.ErrInvalidArgument, "empty key"},
		{"too many ops in a txn", func() error {
			ops := make([]clientv3.Op, 200)
			for i := range ops {
				ops[i] = clientv3.OpPut(fmt.Sprintf("/t/b/op%d", i), "x")
			}
			_, err := coord.Commit(c.Txn(ctx).Then(ops...))
			return err
		}, runtime.ErrInvalidArgument, "split it"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.do()
			if !errors.Is(err, tc.want) || !strings.Contains(err.Error(), tc.says) {
				t.Fatalf("got %v, want %v saying %q", err, tc.want, tc.says)
			}
			if _, err := c.Put(ctx, "/t/b/alive", []byte("yes")); err != nil {
				t.Fatalf("after the bad input the service does not serve: %v", err)
			}
		})
	}
}

// TestCredentials: the read-only user reads but cannot write; wrong
// credentials are a clear authentication error.
func TestCredentials(t *testing.T) {
	ctx := testenv.Ctx(t, 30*time.Second)
	c := connect(t)
	if _, err := c.Put(ctx, "/t/c/k", []byte("v")); err != nil {
		t.Fatal(err)
	}
	ro := connect(t, coord.WithReadOnly())
	if kv, err := ro.Get(ctx, "/t/c/k"); err != nil || string(kv.Value) != "v" {
		t.Fatalf("read-only get: %+v %v", kv, err)
	}
	if _, err := ro.Put(ctx, "/t/c/k", []byte("w")); !errors.Is(err, runtime.ErrPermissionDenied) || !strings.Contains(err.Error(), "read-write credentials") {
		t.Fatalf("read-only put: got %v, want ErrPermissionDenied saying to use the read-write credentials", err)
	}
	_, err := coord.Connect(ctx, coord.WithEndpoints(c.Info().Endpoints, "goray", "wrong"))
	if !errors.Is(err, runtime.ErrUnauthenticated) || !strings.Contains(err.Error(), "goray kv creds") {
		t.Fatalf("wrong password: got %v, want ErrUnauthenticated saying where the credentials are", err)
	}
	_, err = coord.Connect(ctx, coord.WithAddress(runtimeAddress(t)), coord.WithToken("not-the-token"))
	if !errors.Is(err, runtime.ErrUnauthenticated) {
		t.Fatalf("wrong cluster token: got %v, want ErrUnauthenticated", err)
	}
}

// syncBuf is a bytes.Buffer safe for a process's output and the test.
type syncBuf struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuf) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuf) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}
