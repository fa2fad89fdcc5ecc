package bench

import (
	"context"
	"fmt"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/client/v3/concurrency"
	"go.uber.org/zap"

	"github.com/goray/goray/coord"
	"github.com/goray/goray/internal/rpc"
)

// The coordination workloads: each operation made through goray's coord
// SDK, against a baseline of the same operation made in the same run with a
// bare clientv3 (and etcd's concurrency package for the lock) on the same
// embedded etcd (the head raylet's member), with the same credentials.
const (
	etcdPut        = "etcd_clientv3_put"
	etcdGet        = "etcd_clientv3_get"
	etcdTxn        = "etcd_clientv3_txn"
	etcdWatch      = "etcd_clientv3_watch_events"
	etcdLockUnlock = "etcd_clientv3_lock_unlock"
	// watchBatch is how many keys one watch_events operation changes (one
	// transaction), so the metric is the watcher's delivery, not one RPC.
	watchBatch = 64
)

// coordBench is the connections of the coordination workloads, made once
// per run: goray's client and a bare clientv3 to the same etcd.
type coordBench struct {
	c   *coord.Client
	raw *clientv3.Client
}

func (b *coordBench) close() {
	b.c.Close()
	b.raw.Close()
}

// coordEnv connects both clients, starting the embedded cluster if need be.
func (r *runner) coordEnv(ctx context.Context) (*coordBench, error) {
	if r.coord != nil {
		return r.coord, nil
	}
	addr, token := r.cfg.Address, r.cfg.Token
	if addr == "" {
		if r.cluster == nil {
			r.progress("    starting the embedded cluster (two raylet processes)")
			c, err := startCluster(ctx, r.cfg.Exe)
			if err != nil {
				return nil, err
			}
			r.cluster = c
		}
		addr, token = r.cluster.addr, r.cluster.token
	}
	opts := []coord.Option{coord.WithAddress(addr), coord.WithToken(rpc.ResolveToken(token, addr))}
	cr, err := coord.GetCredentials(ctx, opts...)
	if err != nil {
		return nil, err
	}
	c, err := coord.Connect(ctx, opts...)
	if err != nil {
		return nil, err
	}
	raw, err := clientv3.New(clientv3.Config{Endpoints: cr.Endpoints, Username: cr.User, Password: cr.Password,
		DialTimeout: 10 * time.Second, Logger: zap.NewNop()})
	if err != nil {
		c.Close()
		return nil, err
	}
	r.coord = &coordBench{c: c, raw: raw}
	return r.coord, nil
}

// coordSetup wraps a setup that needs the coordination clients.
func coordSetup(f func(ctx context.Context, b *coordBench) (op, func(), error)) func(context.Context, *runner) (op, func(), error) {
	return func(ctx context.Context, r *runner) (op, func(), error) {
		b, err := r.coordEnv(ctx)
		if err != nil {
			return nil, nil, err
		}
		return f(ctx, b)
	}
}

func coordBaselines() []*spec {
	return []*spec{
		{name: etcdPut, adjacent: true, unit: UnitOps, per: 1, note: "bare clientv3 Put of a 2-byte value, sequential",
			setup: coordSetup(func(_ context.Context, b *coordBench) (op, func(), error) {
				return func(ctx context.Context, _ *stopwatch) error {
					_, err := b.raw.Put(ctx, "/bench/base/put", string(okValue))
					return err
				}, func() {}, nil
			})},
		{name: etcdGet, adjacent: true, unit: UnitOps, per: 1, note: "bare clientv3 Get (linearizable) of a 2-byte value",
			setup: coordSetup(func(ctx context.Context, b *coordBench) (op, func(), error) {
				if _, err := b.raw.Put(ctx, "/bench/base/get", string(okValue)); err != nil {
					return nil, nil, err
				}
				return func(ctx context.Context, _ *stopwatch) error {
					_, err := b.raw.Get(ctx, "/bench/base/get")
					return err
				}, func() {}, nil
			})},
		{name: etcdTxn, adjacent: true, unit: UnitOps, per: 1, note: "bare clientv3 Txn: if ModRevision is the last one written, put, else get",
			setup: coordSetup(func(ctx context.Context, b *coordBench) (op, func(), error) {
				const key = "/bench/base/txn"
				resp, err := b.raw.Put(ctx, key, string(okValue))
				if err != nil {
					return nil, nil, err
				}
				rev := resp.Header.Revision
				return func(ctx context.Context, _ *stopwatch) error {
					t, err := b.raw.Txn(ctx).If(clientv3.Compare(clientv3.ModRevision(key), "=", rev)).
						Then(clientv3.OpPut(key, string(okValue))).Else(clientv3.OpGet(key)).Commit()
					if err != nil {
						return err
					}
					if !t.Succeeded {
						return fmt.Errorf("txn: the key changed under the benchmark")
					}
					rev = t.Header.Revision
					return nil
				}, func() {}, nil
			})},
		{name: etcdWatch, adjacent: true, unit: UnitOps, per: watchBatch, note: fmt.Sprintf("a transaction puts %d keys; a bare clientv3 watch on their prefix receives the %d events", watchBatch, watchBatch),
			setup: coordSetup(func(ctx context.Context, b *coordBench) (op, func(), error) {
				wctx, cancel := context.WithCancel(ctx)
				wch := b.raw.Watch(wctx, "/bench/base/watch/", clientv3.WithPrefix())
				ops := watchOps("/bench/base/watch/")
				return func(ctx context.Context, _ *stopwatch) error {
					if _, err := b.raw.Txn(ctx).Then(ops...).Commit(); err != nil {
						return err
					}
					for got := 0; got < watchBatch; {
						resp, ok := <-wch
						if !ok || resp.Err() != nil {
							return fmt.Errorf("watch ended: %v", resp.Err())
						}
						got += len(resp.Events)
					}
					return nil
				}, cancel, nil
			})},
		{name: etcdLockUnlock, adjacent: true, unit: UnitOps, per: 1, note: "etcd's concurrency.Mutex Lock and Unlock on one session, uncontended",
			setup: coordSetup(func(ctx context.Context, b *coordBench) (op, func(), error) {
				s, err := concurrency.NewSession(b.raw, concurrency.WithTTL(5))
				if err != nil {
					return nil, nil, err
				}
				return func(ctx context.Context, _ *stopwatch) error {
					m := concurrency.NewMutex(s, "/bench/base/lock")
					if err := m.Lock(ctx); err != nil {
						return err
					}
					return m.Unlock(ctx)
				}, func() { s.Close() }, nil
			})},
	}
}

func watchOps(prefix string) []clientv3.Op {
	ops := make([]clientv3.Op, watchBatch)
	for i := range ops {
		ops[i] = clientv3.OpPut(fmt.Sprintf("%s%02d", prefix, i), string(okValue))
	}
	return ops
}

func coordSpecs() []*spec {
	goal := func(base string) string { return "≥ 0.9 × " + base }
	return []*spec{
		{name: "kv_put", unit: UnitOps, per: 1, baseline: etcdPut, goal: goal(etcdPut), note: "coord Put of a 2-byte value, sequential",
			setup: coordSetup(func(_ context.Context, b *coordBench) (op, func(), error) {
				return func(ctx context.Context, _ *stopwatch) error {
					_, err := b.c.Put(ctx, "/bench/coord/put", okValue)
					return err
				}, func() {}, nil
			})},
		{name: "kv_get", unit: UnitOps, per: 1, baseline: etcdGet, goal: goal(etcdGet), note: "coord Get (linearizable) of a 2-byte value",
			setup: coordSetup(func(ctx context.Context, b *coordBench) (op, func(), error) {
				if _, err := b.c.Put(ctx, "/bench/coord/get", okValue); err != nil {
					return nil, nil, err
				}
				return func(ctx context.Context, _ *stopwatch) error {
					_, err := b.c.Get(ctx, "/bench/coord/get")
					return err
				}, func() {}, nil
			})},
		{name: "kv_txn", unit: UnitOps, per: 1, baseline: etcdTxn, goal: goal(etcdTxn), note: "coord CompareAndSwap at the last revision written",
			setup: coordSetup(func(ctx context.Context, b *coordBench) (op, func(), error) {
				const key = "/bench/coord/txn"
				rev, err := b.c.Put(ctx, key, okValue)
				if err != nil {
					return nil, nil, err
				}
				return func(ctx context.Context, _ *stopwatch) error {
					next, ok, _, err := b.c.CompareAndSwap(ctx, key, rev, okValue)
					if err != nil {
						return err
					}
					if !ok {
						return fmt.Errorf("compare-and-swap: the key changed under the benchmark")
					}
					rev = next
					return nil
				}, func() {}, nil
			})},
		{name: "watch_events", unit: UnitOps, per: watchBatch, baseline: etcdWatch, goal: goal(etcdWatch),
			note: fmt.Sprintf("a transaction puts %d keys; a coord Watch on their prefix delivers the %d events", watchBatch, watchBatch),
			setup: coordSetup(func(ctx context.Context, b *coordBench) (op, func(), error) {
				wctx, cancel := context.WithCancel(ctx)
				w := b.c.Watch(wctx, "/bench/coord/watch/", coord.WithPrefix())
				ops := watchOps("/bench/coord/watch/")
				return func(ctx context.Context, _ *stopwatch) error {
						if _, err := b.raw.Txn(ctx).Then(ops...).Commit(); err != nil {
							return err
						}
						for range watchBatch {
							if _, ok := <-w.C; !ok {
								return fmt.Errorf("watch ended: %v", w.Err())
							}
						}
						return nil
					}, func() {
						cancel()
						for range w.C {
						}
					}, nil
			})},
		{name: "lock_unlock", unit: UnitOps, per: 1, baseline: etcdLockUnlock, goal: goal(etcdLockUnlock), note: "coord Lock and Unlock on one session, uncontended",
			setup: coordSetup(func(ctx context.Context, b *coordBench) (op, func(), error) {
				s, err := b.c.NewSession(ctx, coord.WithTTL(5*time.Second))
				if err != nil {
					return nil, nil, err
				}
				return func(ctx context.Context, _ *stopwatch) error {
					l, err := s.Lock(ctx, "/bench/coord/lock")
					if err != nil {
						return err
					}
					return l.Unlock(ctx)
				}, func() { s.Close() }, nil
			})},
	}
}

// pairable says whether base, an adjacent baseline, and s, the metric
// measured against it that follows it, are measured as a pair.
func pairable(base, s *spec) bool {
	return base.adjacent && s.baseline == base.name && base.setup != nil && s.setup != nil &&
		!base.freshPerTrial && !s.freshPerTrial
}

// measurePair measures a baseline and its metric with their trials
// alternating (baseline, metric, baseline, ...), so that a change in the
// machine's load (its disk above all: etcd's writes wait for fsync) weighs
// on both alike and their ratio holds.
func (r *runner) measurePair(ctx context.Context, base, s *spec) (Result, Result) {
	specs := [2]*spec{base, s}
	var res [2]Result
	var fns [2]op
	var steps [2]int
	for i, sp := range specs {
		res[i] = Result{Name: sp.name, Unit: sp.unit, Baseline: sp.baseline, Goal: sp.goal, Ray: sp.ray, Note: sp.note}
	}
	failed := func(err error) (Result, Result) {
		for i := range res {
			res[i].Note, res[i].Value, res[i].Std, res[i].Trials = "error: "+err.Error(), 0, 0, nil
		}
		r.progress("    error: %v", err)
		return res[0], res[1]
	}
	for i, sp := range specs {
		fn, cleanup, err := sp.setup(ctx, r)
		if err != nil {
			return failed(err)
		}
		defer cleanup()
		fns[i] = fn
	}
	for i := range specs {
		r.progress("    %s: warm-up %v", specs[i].name, r.timing.warmup)
		w := newStopwatch()
		count := 0
		for w.elapsed() < r.timing.warmup {
			if err := fns[i](ctx, w); err != nil {
				return failed(err)
			}
			count++
		}
		steps[i] = count/10 + 1
	}
	for t := 0; t < r.timing.trials; t++ {
		for i, sp := range specs {
			w := newStopwatch()
			n := 0
			for w.elapsed() < r.timing.trial {
				for range steps[i] {
					if err := fns[i](ctx, w); err != nil {
						return failed(err)
					}
				}
				n += steps[i]
			}
			v := sp.per * float64(n) / w.elapsed().Seconds()
			res[i].Trials = append(res[i].Trials, v)
			r.progress("    %s trial %d/%d: %s %s", sp.name, t+1, r.timing.trials, human(v), sp.unit)
		}
	}
	for i := range res {
		res[i].Value, res[i].Std = meanStd(res[i].Trials)
	}
	return res[0], res[1]
}
