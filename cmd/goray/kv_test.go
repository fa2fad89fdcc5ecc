package main

import (
	"bytes"
	"context"
	"encoding/json"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/goray/goray/internal/embed"
	"github.com/goray/goray/internal/testwait"
)

// lockedBuf is a buffer a command writes while the test reads it.
type lockedBuf struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuf) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuf) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// TestKV runs goray kv's commands against a real head.
func TestKV(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	hc := embed.Config{Head: true, NoNode: true}
	hc.Listen = "127.0.0.1:0"
	head, err := embed.Start(ctx, hc)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(head.Close)
	flags := []string{"--address", head.Address(), "--token-file", head.TokenFile()}
	kv := func(args ...string) (string, error) {
		var out bytes.Buffer
		err := run(ctx, append(append([]string{"kv"}, args...), flags...), &out)
		return out.String(), err
	}
	// A watcher from the revision after a first write sees every change
	// that follows, however soon it connects.
	if _, err := kv("put", "/other", "x"); err != nil {
		t.Fatal(err)
	}
	js, err := kv("get", "/other", "--json")
	var first []struct {
		ModRevision int64 `json:"mod_revision"`
	}
	if err != nil || json.Unmarshal([]byte(js), &first) != nil || len(first) != 1 {
		t.Fatalf("get --json: %q, %v", js, err)
	}
	wctx, wcancel := context.WithCancel(ctx)
	var wout lockedBuf
	wdone := make(chan error, 1)
	go func() {
		wdone <- run(wctx, append([]string{"kv", "watch", "/app/", "--prefix", "--rev", strconv.FormatInt(first[0].ModRevision+1, 10)}, flags...), &wout)
	}()
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"put", "/app/a", "1"}, "OK\n"},
		{[]string{"put", "/app/b", "2"}, "OK\n"},
		{[]string{"get", "/app/a"}, "/app/a\n1\n"},
		{[]string{"get", "/app/", "--prefix", "--print-value-only"}, "1\n2\n"},
		{[]string{"del", "/app/b"}, "1\n"},
		{[]string{"get", "/app/", "--prefix"}, "/app/a\n1\n"},
	} {
		got, err := kv(tc.args...)
		if err != nil || got != tc.want {
			t.Fatalf("goray kv %s: got %q, %v; want %q", strings.Join(tc.args, " "), got, err, tc.want)
		}
	}
	if _, err := kv("get", "/app/missing"); err == nil || !strings.Contains(err.Error(), "does not exist") {
		t.Fatalf("get of a missing key: got %v, want an error saying it does not exist", err)
	}
	if _, err := kv("put", "/app/x", "y", "--read-only"); err == nil || !strings.Contains(err.Error(), "permission denied") {
		t.Fatalf("put as the read-only user: got %v, want permission denied", err)
	}
	var lout bytes.Buffer
	// lock passes what follows NAME to the command: flags come first.
	err = run(ctx, append(append([]string{"kv", "lock"}, flags...), "/locks/l", "sh", "-c", "echo token=$GORAY_LOCK_TOKEN"), &lout)
	got := lout.String()
	if err != nil || !strings.Contains(got, "/locks/l/") || !strings.Contains(got, "token=") {
		t.Fatalf("lock with a command: got %q, %v", got, err)
	}
	got, err = kv("creds")
	if err != nil || !strings.Contains(got, "ETCDCTL_ENDPOINTS=http://127.0.0.1:") || !strings.Contains(got, "ETCDCTL_USER=goray:") {
		t.Fatalf("creds: got %q, %v", got, err)
	}
	want := "PUT\n/app/a\n1\nPUT\n/app/b\n2\nDELETE\n/app/b\n"
	testwait.Eventually(t, 10*time.Second, "the watcher printed every change", func() bool { return wout.String() == want })
	wcancel()
	if err := <-wdone; err != nil {
		t.Fatalf("watch: %v", err)
	}
	if wout.String() != want {
		t.Fatalf("watch output: got %q, want %q", wout.String(), want)
	}
}
