package leader

import (
	"context"
	"log/slog"
	"sync"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/goray/goray/internal/coordsrv"
)

// etcdClient starts an embedded single-member etcd for the test.
func etcdClient(t *testing.T) *clientv3.Client {
	t.Helper()
	e, err := coordsrv.New(coordsrv.Config{Dir: t.TempDir(), Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	if err := e.Start(t.Context()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(e.Close)
	return e.Admin()
}

// run runs an elector until the returned stop is called; terms receives
// each term it wins, and the term's context.
type term struct {
	t   *Term
	ctx context.Context
}

func run(t *testing.T, cli *clientv3.Client, addr string) (*Elector, <-chan term, func()) {
	t.Helper()
	el, err := New(Config{Client: cli, Address: addr, TTL: time.Second, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	terms := make(chan term, 8)
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Go(func() {
		el.Run(ctx, func(ctx context.Context, tm *Term) {
			terms <- term{tm, ctx}
			<-ctx.Done()
		})
	})
	stop := sync.OnceFunc(func() { cancel(); wg.Wait() })
	t.Cleanup(stop)
	return el, terms, stop
}

func waitTerm(t *testing.T, terms <-chan term, who string) term {
	t.Helper()
	select {
	case tm := <-terms:
		return tm
	case <-time.After(20 * time.Second):
		t.Fatalf("%s: got no term within 20s, want one", who)
		return term{}
	}
}

// TestElection: one of two heads leads; the other names it; when the
// leader stops, the other leads with a higher epoch; a term whose election
// key is deleted under it ends, and its fence no longer holds.
func TestElection(t *testing.T) {
	cli := etcdClient(t)
	a, aTerms, stopA := run(t, cli, "a:1")
	ta := waitTerm(t, aTerms, "a")
	if !ta.t.Valid() {
		t.Fatal("a's term: got invalid right after winning, want valid")
	}
	b, bTerms, _ := run(t, cli, "b:1")
	deadline := time.Now().Add(10 * time.Second)
	for {
		addr, self := b.Leader()
		if addr == "a:1" && !self {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("b.Leader(): got (%q, %t), want (\"a:1\", false)", addr, self)
		}
		time.Sleep(20 * time.Millisecond)
	}
	if addr, self := a.Leader(); addr != "a:1" || !self {
		t.Errorf("a.Leader(): got (%q, %t), want (\"a:1\", true)", addr, self)
	}
	// The fence holds while a leads.
	resp, err := cli.Txn(t.Context()).If(ta.t.Fence).Then(clientv3.OpPut("k", "a")).Commit()
	if err != nil || !resp.Succeeded {
		t.Fatalf("a write fenced by a's term: got succeeded=%v err=%v, want it applied", resp != nil && resp.Succeeded, err)
	}

	stopA()
	tb := waitTerm(t, bTerms, "b")
	if tb.t.Epoch <= ta.t.Epoch {
		t.Errorf("b's epoch %d: want more than a's %d", tb.t.Epoch, ta.t.Epoch)
	}
	if a.Current() != nil {
		t.Error("a.Current() after a stopped: got a term, want nil")
	}
	resp, err = cli.Txn(t.Context()).If(ta.t.Fence).Then(clientv3.OpPut("k", "a-late")).Commit()
	if err != nil || resp.Succeeded {
		t.Errorf("a write fenced by a's old term after b won: got succeeded=%v err=%v, want refused", resp != nil && resp.Succeeded, err)
	}

	// Revoke b's lease under it (as etcd does when renewals stop): its term
	// ends and it campaigns again.
	lease := clientv3.LeaseID(0)
	kvs, err := cli.Get(t.Context(), DefaultKey+"/", clientv3.WithPrefix())
	if err != nil || len(kvs.Kvs) == 0 {
		t.Fatalf("read the election keys: %v (%d keys)", err, len(kvs.Kvs))
	}
	lease = clientv3.LeaseID(kvs.Kvs[0].Lease)
	if _, err := cli.Revoke(t.Context(), lease); err != nil {
		t.Fatal(err)
	}
	select {
	case <-tb.ctx.Done():
	case <-time.After(10 * time.Second):
		t.Fatal("b's term: still running 10s after its lease was revoked, want ended")
	}
	if tb.t.Valid() {
		t.Error("b's ended term: got valid, want invalid")
	}
	tb2 := waitTerm(t, bTerms, "b again")
	if tb2.t.Epoch <= tb.t.Epoch {
		t.Errorf("b's second epoch %d: want more than its first %d", tb2.t.Epoch, tb.t.Epoch)
	}
}

func TestConfigErrors(t *testing.T) {
	for _, c := range []Config{
		{},
		{Client: &clientv3.Client{}},
		{Client: &clientv3.Client{}, Address: "a:1", TTL: 1500 * time.Millisecond},
		{Client: &clientv3.Client{}, Address: "a:1", TTL: -time.Second},
	} {
		if _, err := New(c); err == nil {
			t.Errorf("New(%+v): got nil error, want one", c)
		}
	}
}
