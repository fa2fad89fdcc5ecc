package coordsrv

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/goleak"
	"go.uber.org/zap"

	pb "github.com/goray/goray/proto/goray/v1"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m, etcdGlobals()...)
}

// etcdGlobals are goroutines etcd's packages start once per process and never
// stop (not per member).
func etcdGlobals() []goleak.Option {
	return []goleak.Option{
		goleak.IgnoreTopFunction("go.opencensus.io/stats/view.(*worker).start"),
		goleak.IgnoreAnyFunction("go.etcd.io/etcd/pkg/v3/logutil.(*MergeLogger).outputLoop"),
	}
}

func dialT(t *testing.T, in *pb.GetCoordinationResponse, user, pass string) *clientv3.Client {
	t.Helper()
	c, err := clientv3.New(clientv3.Config{Endpoints: in.GetEndpoints(), Username: user, Password: pass, DialTimeout: 5 * time.Second, Logger: zap.NewNop()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func TestEmbeddedAuthAndRestart(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	dir := t.TempDir()
	start := func() *Engine {
		e, err := New(Config{Dir: dir, Token: "tok-1"})
		if err != nil {
			t.Fatal(err)
		}
		if err := e.Start(ctx); err != nil {
			t.Fatal(err)
		}
		return e
	}
	e := start()
	rw, err := e.GetCoordination(ctx, &pb.GetCoordinationRequest{})
	if err != nil {
		t.Fatal(err)
	}
	ro, err := e.GetCoordination(ctx, &pb.GetCoordinationRequest{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	_, wantRW, wantRO := Passwords("tok-1")
	if rw.GetUser() != UserRW || rw.GetPassword() != wantRW || ro.GetUser() != UserRO || ro.GetPassword() != wantRO {
		t.Fatalf("got users %q/%q, want %q/%q with the derived passwords", rw.GetUser(), ro.GetUser(), UserRW, UserRO)
	}
	if !strings.HasPrefix(rw.GetEndpoints()[0], "http://127.0.0.1:") {
		t.Fatalf("endpoint %q: want loopback", rw.GetEndpoints()[0])
	}
	c := dialT(t, rw, rw.GetUser(), rw.GetPassword())
	if _, err := c.Put(ctx, "a", "1"); err != nil {
		t.Fatalf("read-write put: %v", err)
	}
	r := dialT(t, ro, ro.GetUser(), ro.GetPassword())
	if g, err := r.Get(ctx, "a"); err != nil || len(g.Kvs) != 1 || string(g.Kvs[0].Value) != "1" {
		t.Fatalf("read-only get: %v %v", g, err)
	}
	if _, err := r.Put(ctx, "a", "2"); !errors.Is(err, rpctypes.ErrPermissionDenied) {
		t.Fatalf("read-only put: got %v, want permission denied", err)
	}
	if _, err := clientv3.New(clientv3.Config{Endpoints: rw.GetEndpoints(), Username: UserRW, Password: "wrong", DialTimeout: 5 * time.Second, Logger: zap.NewNop()}); !errors.Is(err, rpctypes.ErrAuthFailed) {
		t.Fatalf("wrong password: got %v, want authentication failed", err)
	}
	anon := dialT(t, rw, "", "")
	if _, err := anon.Get(ctx, "a"); err == nil {
		t.Fatal("a client without credentials read a key")
	}
	e.Close()

	// A restarted engine on the same dir: the same endpoint, the same keys.
	e = start()
	defer e.Close()
	rw2, err := e.GetCoordination(ctx, &pb.GetCoordinationRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if rw2.GetEndpoints()[0] != rw.GetEndpoints()[0] {
		t.Fatalf("endpoint after restart: got %s, want %s", rw2.GetEndpoints()[0], rw.GetEndpoints()[0])
	}
	c2 := dialT(t, rw2, rw2.GetUser(), rw2.GetPassword())
	if g, err := c2.Get(ctx, "a"); err != nil || len(g.Kvs) != 1 || string(g.Kvs[0].Value) != "1" {
		t.Fatalf("get after restart: %v %v", g, err)
	}
}

func TestOtherTokenOnKeptData(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	dir := t.TempDir()
	e, _ := New(Config{Dir: dir, Token: "tok-1"})
	if err := e.Start(ctx); err != nil {
		t.Fatal(err)
	}
	e.Close()
	e, _ = New(Config{Dir: dir, Token: "tok-2"})
	defer e.Close()
	err := e.Start(ctx)
	if err == nil || !strings.Contains(err.Error(), "another cluster token") {
		t.Fatalf("got %v, want an error naming another cluster token", err)
	}
}

// TestExternal: an engine pointed at an etcd cluster it does not run hands
// out that cluster's endpoint and the given credentials; wrong ones fail
// its start with a clear error.
func TestExternal(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	// The "external" cluster: another engine's member.
	ext, err := New(Config{Dir: t.TempDir(), Token: "ext-token"})
	if err != nil {
		t.Fatal(err)
	}
	if err := ext.Start(ctx); err != nil {
		t.Fatal(err)
	}
	defer ext.Close()
	in := ext.Info()
	e, err := New(Config{Endpoints: in.Endpoints, User: in.User, Password: in.Password})
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	resp, err := e.GetCoordination(ctx, &pb.GetCoordinationRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if resp.GetEndpoints()[0] != in.Endpoints[0] || resp.GetUser() != in.User || resp.GetPassword() != in.Password {
		t.Fatalf("got %v %s, want the external cluster's endpoint and credentials", resp.GetEndpoints(), resp.GetUser())
	}
	if e.Info().Embedded {
		t.Fatal("an external engine says it is embedded")
	}
	bad, err := New(Config{Endpoints: in.Endpoints, User: in.User, Password: "wrong"})
	if err != nil {
		t.Fatal(err)
	}
	defer bad.Close()
	if err := bad.Start(ctx); err == nil || !strings.Contains(err.Error(), "external etcd") {
		t.Fatalf("wrong credentials for the external cluster: got %v, want an error naming it", err)
	}
	if _, err := New(Config{Endpoints: []string{"127.0.0.1:2379"}}); err == nil {
		t.Fatal("an endpoint that is not a URL was accepted")
	}
}
