// Config: the seed's exercise 5, a configuration management system on the
// coordination service. A configuration tree lives under one etcd prefix;
// service actors load it and watch it, reloading live; every update is a
// compare-and-swap against the revision it read, so a stale writer is
// refused; a rollback writes back the tree as it was at an earlier revision.
//
//	go run ./examples/config
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"sort"
	"strings"
	"sync"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/goray/goray/actor"
	"github.com/goray/goray/coord"
	"github.com/goray/goray/objectstore"
	"github.com/goray/goray/runtime"
)

// prefix is the configuration tree's root.
const prefix = "/examples/config/app/"

// Snapshot is a service's configuration and the revision it reflects.
type Snapshot struct {
	Values   map[string]string `msgpack:"values"`
	Revision int64             `msgpack:"revision"`
}

// Service is a service actor that runs with the live configuration. Its
// watch goroutine applies each change; mu guards cfg, rev and changed.
type Service struct {
	mu      sync.Mutex
	cfg     map[string]string
	rev     int64
	changed chan struct{} // closed and replaced at every change
	c       *coord.Client
}

// Start loads the tree and watches it from the next revision; it returns
// the revision loaded.
func (s *Service) Start(ctx context.Context) (int64, error) {
	c, err := coord.Connect(ctx) // the cluster this worker belongs to
	if err != nil {
		return 0, err
	}
	kvs, rev, err := c.Range(ctx, prefix, 0)
	if err != nil {
		return 0, err
	}
	s.mu.Lock()
	s.c, s.cfg, s.rev, s.changed = c, map[string]string{}, rev, make(chan struct{})
	for _, kv := range kvs {
		s.cfg[strings.TrimPrefix(kv.Key, prefix)] = string(kv.Value)
	}
	s.mu.Unlock()
	// The watch lasts as long as the actor's process.
	w := c.Watch(context.Background(), prefix, coord.WithPrefix(), coord.FromRevision(rev+1))
	go func() {
		for ev := range w.C {
			s.mu.Lock()
			name := strings.TrimPrefix(ev.KV.Key, prefix)
			if ev.Type == coord.EventDelete {
				delete(s.cfg, name)
			} else {
				s.cfg[name] = string(ev.KV.Value)
			}
			s.rev = ev.Revision()
			close(s.changed)
			s.changed = make(chan struct{})
			s.mu.Unlock()
		}
	}()
	return rev, nil
}

// Config returns the configuration once it reflects revision atLeast.
func (s *Service) Config(ctx context.Context, atLeast int64) (Snapshot, error) {
	for {
		s.mu.Lock()
		if s.changed == nil {
			s.mu.Unlock()
			return Snapshot{}, errors.New("config: Start was not called")
		}
		if s.rev >= atLeast {
			snap := Snapshot{Values: make(map[string]string, len(s.cfg)), Revision: s.rev}
			for k, v := range s.cfg {
				snap.Values[k] = v
			}
			s.mu.Unlock()
			return snap, nil
		}
		ch := s.changed
		s.mu.Unlock()
		select {
		case <-ch:
		case <-ctx.Done():
			return Snapshot{}, ctx.Err()
		}
	}
}

// Node is the node the actor runs on.
func (*Service) Node(context.Context) (string, error) { return runtime.CurrentNodeID(), nil }

var (
	serviceType   = actor.Register("config.service", func() *Service { return &Service{} })
	serviceStart  = actor.Method0(serviceType, "start", (*Service).Start)
	serviceConfig = actor.Method1(serviceType, "config", (*Service).Config)
	serviceNode   = actor.Method0(serviceType, "node", (*Service).Node)
)

func main() {
	runtime.ServeIfWorker()
	if err := run(context.Background(), os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "config:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, out io.Writer) error {
	ctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	if err := runtime.Init(ctx); err != nil {
		return err
	}
	defer runtime.Shutdown()
	c, err := coord.Connect(ctx)
	if err != nil {
		return err
	}
	defer c.Close()
	if _, _, err := c.DeletePrefix(ctx, prefix); err != nil {
		return err
	}

	// Version 1 of the tree, written in one transaction.
	v1 := map[string]string{"rate": "10", "mode": "safe"}
	var puts []clientv3.Op
	for k, v := range v1 {
		puts = append(puts, clientv3.OpPut(prefix+k, v))
	}
	resp, err := coord.Commit(c.Txn(ctx).Then(puts...))
	if err != nil {
		return err
	}
	rev1 := resp.Header.Revision
	fmt.Fprintf(out, "config v1: %s\n", format(v1))

	const n = 3
	services := make([]actor.Handle[Service], n)
	nodes := map[string]bool{}
	for i := range services {
		// Spread: on a cluster, the actors run on different nodes.
		if services[i], err = actor.Spawn(ctx, serviceType, actor.WithStrategy(runtime.SpreadStrategy())); err != nil {
			return err
		}
		if _, err := serviceStart.Remote(ctx, services[i]).Get(ctx); err != nil {
			return err
		}
		node, err := serviceNode.Remote(ctx, services[i]).Get(ctx)
		if err != nil {
			return err
		}
		nodes[node] = true
	}
	fmt.Fprintf(os.Stderr, "config: %d actors on %d node(s)\n", n, len(nodes))
	all := func(what string, rev int64) error {
		var first string
		for i, h := range services {
			snap, err := serviceConfig.Remote(ctx, h, objectstore.Val(rev)).Get(ctx)
			if err != nil {
				return err
			}
			if got := format(snap.Values); i == 0 {
				first = got
			} else if got != first {
				return fmt.Errorf("service %d has %s, service 0 has %s", i, got, first)
			}
		}
		fmt.Fprintf(out, "%d actors %s: %s\n", n, what, first)
		return nil
	}
	if err := all("loaded", rev1); err != nil {
		return err
	}

	// An update is a compare-and-swap against the revision it read: a
	// writer that read before another's update is refused.
	update := func(key, to string) (int64, error) {
		kv, err := c.Get(ctx, prefix+key)
		if err != nil {
			return 0, err
		}
		rev, ok, cur, err := c.CompareAndSwap(ctx, prefix+key, kv.ModRevision, []byte(to))
		if err != nil {
			return 0, err
		}
		if !ok {
			return 0, fmt.Errorf("%s changed meanwhile to %s", key, cur.Value)
		}
		fmt.Fprintf(out, "update %s %s -> %s: ok\n", key, kv.Value, to)
		return rev, nil
	}
	stale, err := c.Get(ctx, prefix+"rate")
	if err != nil {
		return err
	}
	rev2, err := update("rate", "20")
	if err != nil {
		return err
	}
	_, ok, cur, err := c.CompareAndSwap(ctx, prefix+"rate", stale.ModRevision, []byte("30"))
	if err != nil {
		return err
	}
	if ok {
		return errors.New("a stale compare-and-swap succeeded")
	}
	fmt.Fprintf(out, "stale update rate %s -> 30: refused, rate is now %s\n", stale.Value, cur.Value)
	if err := all("reloaded", rev2); err != nil {
		return err
	}
	rev3, err := update("mode", "fast")
	if err != nil {
		return err
	}
	if err := all("reloaded", rev3); err != nil {
		return err
	}

	// Rollback: the tree as it was at rev1, written back in one
	// transaction that applies only if nothing changed since it was read.
	old, _, err := c.RangeAt(ctx, prefix, 0, rev1)
	if err != nil {
		return err
	}
	now, _, err := c.Range(ctx, prefix, 0)
	if err != nil {
		return err
	}
	var guards []clientv3.Cmp
	for _, kv := range now {
		guards = append(guards, clientv3.Compare(clientv3.ModRevision(kv.Key), "=", kv.ModRevision))
	}
	puts = puts[:0]
	for _, kv := range old {
		puts = append(puts, clientv3.OpPut(kv.Key, string(kv.Value)))
	}
	resp, err = coord.Commit(c.Txn(ctx).If(guards...).Then(puts...))
	if err != nil {
		return err
	}
	if !resp.Succeeded {
		return errors.New("rollback: the tree changed while it was being rolled back")
	}
	fmt.Fprintln(out, "rollback to v1: ok")
	return all("reloaded", resp.Header.Revision)
}

// format is a configuration as "k=v k=v", sorted by key.
func format(m map[string]string) string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	parts := make([]string, len(keys))
	for i, k := range keys {
		parts[i] = k + "=" + m[k]
	}
	return strings.Join(parts, " ")
}
