// Package leader elects the active head among several (issue 13, head high
// availability) through etcd: each head campaigns with a lease of its own
// (etcd's concurrency.Election); the one whose key is oldest leads for as
// long as its lease lives, and the others are standbys that know who leads.
//
// A term ends when the lease is lost (its keepalives stopped reaching etcd:
// a partition, a pause, a dead member), when the leader resigns, or when the
// process stops. Two things keep a deposed leader from acting:
//
//   - The fence: Term.Fence compares the create revision of the term's
//     election key; every write the head makes carries it in its
//     transaction, so once the key is gone (the lease expired) no write of
//     the old term lands, whatever the old leader believes.
//   - The local deadline: Term.Valid is false once the last keepalive etcd
//     answered is older than two thirds of the lease's TTL — always before
//     etcd can expire the lease and let another head win — so a head that
//     was paused (SIGSTOP) refuses requests the moment it runs again,
//     before it has heard that it lost.
//
// Epochs: a term's Epoch is its key's create revision, which grows with
// every term of the cluster; raylets can refuse commands of an older epoch
// than one they have seen.
package leader

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/client/v3/concurrency"
)

// Defaults.
const (
	// DefaultKey is the election's key prefix.
	DefaultKey = "/goray/head/leader"
	// DefaultTTL is the leader's lease: a dead leader is replaced within
	// about this long (plus an etcd leader election when the dead head's
	// member led etcd's raft).
	DefaultTTL = 1 * time.Second
)

// Config configures an Elector.
type Config struct {
	// Client is the head's etcd client. Required.
	Client *clientv3.Client
	// Key is the election's key prefix; default DefaultKey.
	Key string
	// Address is this head's goray address, the value its campaign
	// publishes: the standbys tell clients to go there. Required.
	Address string
	// TTL is the lease's time to live, a whole number of seconds ≥ 1;
	// default DefaultTTL.
	TTL time.Duration
	// Logger; default slog.Default().
	Logger *slog.Logger
}

// Term is one leadership term of this head.
type Term struct {
	// Epoch is the term's election key's create revision: it grows with
	// every term of the cluster.
	Epoch int64
	// Fence holds while the term's key exists; writes carry it.
	Fence clientv3.Cmp
	e     *Elector
	valid func() bool
}

// Valid reports whether the term surely still holds: its lease was renewed
// recently enough that etcd cannot have expired it yet.
func (t *Term) Valid() bool { return t.valid() }

// Elector campaigns for this head and tracks who leads.
type Elector struct {
	cfg Config
	log *slog.Logger

	leader atomic.Pointer[string] // the leader's address as last observed; nil: unknown
	term   atomic.Pointer[Term]   // this head's current term; nil when it does not lead
}

// New makes an Elector; Run campaigns.
func New(cfg Config) (*Elector, error) {
	if cfg.Client == nil || cfg.Address == "" {
		return nil, errors.New("leader: an etcd client and this head's address are required")
	}
	if cfg.Key == "" {
		cfg.Key = DefaultKey
	}
	if cfg.TTL == 0 {
		cfg.TTL = DefaultTTL
	}
	if cfg.TTL < time.Second || cfg.TTL%time.Second != 0 {
		return nil, fmt.Errorf("leader: lease TTL %s: want a whole number of seconds ≥ 1s", cfg.TTL)
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	return &Elector{cfg: cfg, log: cfg.Logger.With("component", "leader")}, nil
}

// Leader is the address of the head that leads as this head last saw it
// ("" when unknown), and whether it is this head in a valid term.
func (e *Elector) Leader() (addr string, self bool) {
	if t := e.term.Load(); t != nil && t.Valid() {
		return e.cfg.Address, true
	}
	if p := e.leader.Load(); p != nil && *p != e.cfg.Address {
		return *p, false
	}
	return "", false
}

// Current is this head's term while it leads and the term is valid; nil
// otherwise.
func (e *Elector) Current() *Term {
	if t := e.term.Load(); t != nil && t.Valid() {
		return t
	}
	return nil
}

// Run campaigns until ctx ends. Each time this head wins it calls lead with
// a context that ends with the term, and resigns when lead returns; then it
// campaigns again. Errors talking to etcd are retried with a backoff; Run
// returns only when ctx ends.
func (e *Elector) Run(ctx context.Context, lead func(ctx context.Context, t *Term)) {
	var wg sync.WaitGroup
	defer wg.Wait()
	wg.Go(func() { e.observe(ctx) })
	backoff := 100 * time.Millisecond
	for ctx.Err() == nil {
		err := e.campaign(ctx, lead)
		if ctx.Err() != nil {
			return
		}
		if err != nil {
			e.log.Warn("head election: retrying", "err", err, "in", backoff)
			select {
			case <-ctx.Done():
				return
			case <-time.After(backoff):
			}
			backoff = min(2*backoff, 2*time.Second)
			continue
		}
		backoff = 100 * time.Millisecond
	}
}

// campaign runs one campaign and, if it wins, one term.
func (e *Elector) campaign(ctx context.Context, lead func(ctx context.Context, t *Term)) error {
	cli := e.cfg.Client
	ttl := int64(e.cfg.TTL / time.Second)
	gctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	granted, err := cli.Grant(gctx, ttl)
	cancel()
	if err != nil {
		return fmt.Errorf("grant a lease: %w", err)
	}
	var renewed atomic.Int64 // unix nanos of the last renewal etcd answered
	renewed.Store(time.Now().UnixNano())
	lctx, stopLease := context.WithCancel(ctx)
	defer stopLease()
	kas, err := cli.KeepAlive(lctx, granted.ID)
	if err != nil {
		return fmt.Errorf("keep the lease alive: %w", err)
	}
	lost := make(chan struct{})
	go func() {
		defer close(lost)
		for range kas {
			renewed.Store(time.Now().UnixNano())
		}
	}()
	sess, err := concurrency.NewSession(cli, concurrency.WithLease(granted.ID), concurrency.WithContext(lctx))
	if err != nil {
		return fmt.Errorf("open an election session: %w", err)
	}
	defer func() {
		rctx, cancel := context.WithTimeout(context.Background(), time.Second)
		_, _ = cli.Revoke(rctx, granted.ID)
		cancel()
		sess.Close()
	}()
	el := concurrency.NewElection(sess, e.cfg.Key)
	cctx, stopCampaign := context.WithCancel(lctx)
	go func() {
		select {
		case <-lost:
		case <-sess.Done():
		case <-cctx.Done():
		}
		stopCampaign()
	}()
	err = el.Campaign(cctx, e.cfg.Address)
	stopCampaign()
	if err != nil {
		if ctx.Err() != nil {
			return nil
		}
		return fmt.Errorf("campaign: %w", err)
	}
	window := e.cfg.TTL * 2 / 3
	term := &Term{
		Epoch: el.Rev(),
		Fence: clientv3.Compare(clientv3.CreateRevision(el.Key()), "=", el.Rev()),
		e:     e,
	}
	tctx, endTerm := context.WithCancel(ctx)
	defer endTerm()
	term.valid = func() bool {
		return tctx.Err() == nil && time.Since(time.Unix(0, renewed.Load())) < window
	}
	if !term.Valid() {
		return errors.New("won the election after the lease's renewal window passed")
	}
	e.term.Store(term)
	defer e.term.CompareAndSwap(term, nil)
	e.log.Info("this head leads", "address", e.cfg.Address, "epoch", term.Epoch)
	// The term ends when the lease is lost, the session ends, or a renewal
	// is overdue (checked often, so that a pause is noticed at once).
	go func() {
		t := time.NewTicker(window / 8)
		defer t.Stop()
		for {
			select {
			case <-lost:
				endTerm()
				return
			case <-sess.Done():
				endTerm()
				return
			case <-tctx.Done():
				return
			case <-t.C:
				if !term.Valid() {
					endTerm()
					return
				}
			}
		}
	}()
	lead(tctx, term)
	e.term.CompareAndSwap(term, nil)
	why := "resigned"
	if ctx.Err() != nil {
		why = "stopping"
	} else if tctx.Err() != nil {
		why = "lease lost or overdue"
	}
	e.log.Warn("this head no longer leads", "epoch", term.Epoch, "why", why)
	rctx, cancel := context.WithTimeout(context.Background(), time.Second)
	_ = el.Resign(rctx)
	cancel()
	return nil
}

// observe keeps e.leader up to date with the election's leader.
func (e *Elector) observe(ctx context.Context) {
	cli := e.cfg.Client
	for ctx.Err() == nil {
		gctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		resp, err := cli.Get(gctx, e.cfg.Key+"/", clientv3.WithFirstCreate()...)
		cancel()
		if err == nil {
			if len(resp.Kvs) > 0 {
				addr := string(resp.Kvs[0].Value)
				e.leader.Store(&addr)
			} else {
				e.leader.Store(nil)
			}
			wctx, cancel := context.WithCancel(ctx)
			wch := cli.Watch(clientv3.WithRequireLeader(wctx), e.cfg.Key+"/", clientv3.WithPrefix(), clientv3.WithRev(resp.Header.Revision+1))
			for range wch {
				break // something changed: read the first key again
			}
			cancel()
			continue
		}
		select {
		case <-ctx.Done():
		case <-time.After(200 * time.Millisecond):
		}
	}
}
