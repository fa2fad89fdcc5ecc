package coord

import (
	"context"
	"errors"
	"fmt"
	"math"
	"sync"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/client/v3/concurrency"

	"github.com/goray/goray/internal/errs"
)

// DefaultSessionTTL is a session's lease TTL: how long after its process
// dies (or stops, or loses etcd) its keys, locks and leadership last.
const DefaultSessionTTL = 5 * time.Second

// Session is a lease this process keeps alive (a keepalive stream from this
// process, renewed every TTL/3): it lives exactly as long as the process
// that holds it, plus at most its TTL after the process dies. Keys put
// WithSession, locks and leadership belong to it and vanish with it. Close
// revokes it at once.
type Session struct {
	c   *Client
	s   *concurrency.Session
	ttl time.Duration

	// mu guards local: one channel per lock name, so that two goroutines
	// of this process locking the same name through one session take
	// turns (etcd's lock is per session).
	mu    sync.Mutex
	local map[string]chan struct{}
}

// SessionOption configures NewSession.
type SessionOption interface{ applySession(*sessionOpts) }

type sessionOpts struct{ ttl time.Duration }

type sessionFunc func(*sessionOpts)

func (f sessionFunc) applySession(o *sessionOpts) { f(o) }

// WithTTL sets the session's TTL (default DefaultSessionTTL), rounded up to
// whole seconds (etcd's unit) and at least etcd's shortest lease.
func WithTTL(d time.Duration) SessionOption { return sessionFunc(func(o *sessionOpts) { o.ttl = d }) }

// NewSession starts a session of its own (Session is the Client's shared
// one).
func (c *Client) NewSession(ctx context.Context, opts ...SessionOption) (*Session, error) {
	o := sessionOpts{ttl: DefaultSessionTTL}
	for _, op := range opts {
		op.applySession(&o)
	}
	if o.ttl <= 0 {
		return nil, errs.New(errs.KindInvalidArgument, "", "session TTL %s: want a positive duration", o.ttl)
	}
	if o.ttl < c.info.MinLeaseTTL {
		o.ttl = c.info.MinLeaseTTL
	}
	secs := int(math.Ceil(o.ttl.Seconds()))
	// The lease is granted under ctx; the keepalive lives until Close (the
	// client's context), not until ctx ends.
	lease, err := c.cli.Grant(ctx, int64(secs))
	if err != nil {
		return nil, convert(err, "start a session")
	}
	s, err := concurrency.NewSession(c.cli, concurrency.WithLease(lease.ID), concurrency.WithTTL(secs))
	if err != nil {
		return nil, convert(err, "start a session")
	}
	return &Session{c: c, s: s, ttl: time.Duration(secs) * time.Second, local: map[string]chan struct{}{}}, nil
}

// Lease is the session's etcd lease ID.
func (s *Session) Lease() int64 { return int64(s.s.Lease()) }

// TTL is the session's TTL.
func (s *Session) TTL() time.Duration { return s.ttl }

// Done is closed when the session ends: Close, or its lease expired or was
// revoked (then its locks and leadership are lost).
func (s *Session) Done() <-chan struct{} { return s.s.Done() }

// Raw is etcd's concurrency.Session under s.
func (s *Session) Raw() *concurrency.Session { return s.s }

// Close ends the session and revokes its lease: its keys are deleted and
// its locks released now.
func (s *Session) Close() error {
	err := s.s.Close()
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return nil
	}
	return convert(err, "close the session")
}

// alive fails with ErrSessionLost once the session has ended.
func (s *Session) alive(what string) error {
	select {
	case <-s.s.Done():
		return errs.New(errs.KindSessionLost, "", "%s: the session (lease %x) has ended: its lease expired or was revoked, so what it held is gone: start a new session", what, s.Lease())
	default:
		return nil
	}
}

// Lock is a held lock. Token is its fencing token: the revision at which
// the holder's lock key was created, larger for every later holder, so a
// resource that remembers the largest token it has seen and refuses smaller
// ones refuses a holder whose session expired while it was paused.
type Lock struct {
	s     *Session
	name  string
	m     *concurrency.Mutex
	token int64
	local chan struct{}
	once  sync.Once
}

// LockOption configures Lock.
type LockOption interface{ applyLock(*lockOpts) }

type lockOpts struct{ timeout time.Duration }

type lockFunc func(*lockOpts)

func (f lockFunc) applyLock(o *lockOpts) { f(o) }

// WithAcquireTimeout bounds the wait for the lock; past it Lock fails with
// ErrLockTimeout. Default: ctx alone bounds it.
func WithAcquireTimeout(d time.Duration) LockOption {
	return lockFunc(func(o *lockOpts) { o.timeout = d })
}

// Lock acquires the lock name through the Client's process session.
func (c *Client) Lock(ctx context.Context, name string, opts ...LockOption) (*Lock, error) {
	s, err := c.Session(ctx)
	if err != nil {
		return nil, err
	}
	return s.Lock(ctx, name, opts...)
}

// Lock acquires the lock name: it waits (in the order the waiters asked)
// until every earlier holder released it or its session ended. The lock's
// keys are name/<lease in hex>, etcd's own lock recipe, so `etcdctl lock
// name` contends for the same lock.
func (s *Session) Lock(ctx context.Context, name string, opts ...LockOption) (*Lock, error) {
	if name == "" {
		return nil, errs.New(errs.KindInvalidArgument, "", "lock: empty name")
	}
	var o lockOpts
	for _, op := range opts {
		op.applyLock(&o)
	}
	if err := s.alive(fmt.Sprintf("lock %q", name)); err != nil {
		return nil, err
	}
	actx := ctx
	if o.timeout > 0 {
		var cancel context.CancelFunc
		actx, cancel = context.WithTimeout(ctx, o.timeout)
		defer cancel()
	}
	s.mu.Lock()
	local, ok := s.local[name]
	if !ok {
		local = make(chan struct{}, 1)
		s.local[name] = local
	}
	s.mu.Unlock()
	select {
	case local <- struct{}{}:
	case <-actx.Done():
		return nil, s.lockErr(ctx, actx, name, o.timeout, nil)
	}
	m := concurrency.NewMutex(s.s, name)
	if err := m.Lock(actx); err != nil {
		<-local
		return nil, s.lockErr(ctx, actx, name, o.timeout, err)
	}
	cmp := m.IsOwner()
	return &Lock{s: s, name: name, m: m, token: cmp.GetCompare().GetCreateRevision(), local: local}, nil
}

func (s *Session) lockErr(ctx, actx context.Context, name string, timeout time.Duration, err error) error {
	if ctx.Err() == nil && actx.Err() != nil {
		holder := ""
		hctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		if resp, gerr := s.c.cli.Get(hctx, name+"/", clientv3.WithFirstCreate()...); gerr == nil && len(resp.Kvs) > 0 {
			holder = fmt.Sprintf(" (held by the session of lease %x since revision %d)", resp.Kvs[0].Lease, resp.Kvs[0].CreateRevision)
		}
		return errs.New(errs.KindLockTimeout, "", "lock %q was not acquired within %s%s: retry later, raise the acquire timeout, or find out why its holder keeps it", name, timeout, holder)
	}
	if err == nil {
		err = ctx.Err()
	}
	if errors.Is(err, concurrency.ErrSessionExpired) {
		return s.alive(fmt.Sprintf("lock %q", name))
	}
	return convert(err, fmt.Sprintf("lock %q", name))
}

// Token is the fencing token: the lock key's create revision.
func (l *Lock) Token() int64 { return l.token }

// Key is the holder's lock key.
func (l *Lock) Key() string { return l.m.Key() }

// Name is the lock's name.
func (l *Lock) Name() string { return l.name }

// Lost is closed when the holder's session ends: the lock may then be
// someone else's.
func (l *Lock) Lost() <-chan struct{} { return l.s.Done() }

// IsOwner is a comparison that holds while this lock is held, for a
// transaction that must only apply under the lock (Txn(ctx).If(l.IsOwner())).
func (l *Lock) IsOwner() clientv3.Cmp { return l.m.IsOwner() }

// Unlock releases the lock. Releasing it twice is ErrInvalidArgument.
func (l *Lock) Unlock(ctx context.Context) error {
	var err error = errs.New(errs.KindInvalidArgument, "", "unlock %q: the lock was already released", l.name)
	l.once.Do(func() {
		err = convert(l.m.Unlock(ctx), fmt.Sprintf("unlock %q", l.name))
		<-l.local
	})
	return err
}

// Election is a leader election: one leader at a time among the sessions
// campaigning under one name, in the order they asked (etcd's election
// recipe; `etcdctl elect name` takes part in the same election).
type Election struct {
	s    *Session
	name string
	e    *concurrency.Election
}

// Leader is an election's current leader.
type Leader struct {
	// Value is what the leader proclaimed (Campaign's value).
	Value []byte
	// Key is the leader's election key; Revision its create revision (a
	// fencing token of the leadership, larger for every later leader).
	Key      string
	Revision int64
	// Lease is the leader's session lease.
	Lease int64
}

// Election is the election name, through s.
func (s *Session) Election(name string) *Election {
	return &Election{s: s, name: name, e: concurrency.NewElection(s.s, name)}
}

// Campaign waits until this session is the leader and proclaims value; it
// returns the leadership's Leader (its Revision is the fencing token).
func (e *Election) Campaign(ctx context.Context, value []byte) (Leader, error) {
	if e.name == "" {
		return Leader{}, errs.New(errs.KindInvalidArgument, "", "campaign: empty election name")
	}
	if err := e.s.alive(fmt.Sprintf("campaign in %q", e.name)); err != nil {
		return Leader{}, err
	}
	if err := e.e.Campaign(ctx, string(value)); err != nil {
		if errors.Is(err, concurrency.ErrSessionExpired) {
			return Leader{}, e.s.alive(fmt.Sprintf("campaign in %q", e.name))
		}
		return Leader{}, convert(err, fmt.Sprintf("campaign in %q", e.name))
	}
	return Leader{Value: value, Key: e.e.Key(), Revision: e.e.Rev(), Lease: e.s.Lease()}, nil
}

// Proclaim changes the leader's value without a new election.
func (e *Election) Proclaim(ctx context.Context, value []byte) error {
	return convert(e.e.Proclaim(ctx, string(value)), fmt.Sprintf("proclaim in %q", e.name))
}

// Resign gives up the leadership (a no-op when not leader).
func (e *Election) Resign(ctx context.Context) error {
	return convert(e.e.Resign(ctx), fmt.Sprintf("resign from %q", e.name))
}

// Leader is the current leader; ErrNotFound when there is none.
func (e *Election) Leader(ctx context.Context) (Leader, error) {
	resp, err := e.e.Leader(ctx)
	if err != nil {
		return Leader{}, convert(err, fmt.Sprintf("leader of %q", e.name))
	}
	kv := resp.Kvs[0]
	return Leader{Value: kv.Value, Key: string(kv.Key), Revision: kv.CreateRevision, Lease: kv.Lease}, nil
}

// Observe delivers the leader each time it changes (or proclaims a new
// value), until ctx is done.
func (e *Election) Observe(ctx context.Context) <-chan Leader {
	out := make(chan Leader)
	in := e.e.Observe(ctx)
	go func() {
		defer close(out)
		for resp := range in {
			if len(resp.Kvs) == 0 {
				continue
			}
			kv := resp.Kvs[0]
			select {
			case out <- Leader{Value: kv.Value, Key: string(kv.Key), Revision: kv.CreateRevision, Lease: kv.Lease}:
			case <-ctx.Done():
				return
			}
		}
	}()
	return out
}
