// Lock: actors contend for a distributed lock (goray's coordination
// service) that guards a resource, a ledger actor. Each holder writes to the
// ledger with its fencing token, the lock key's revision, and the ledger
// refuses a token smaller than one it has seen. One holder's process is
// killed with kill -9 while it holds the lock: its session's lease expires
// within the session TTL, the lock passes on, and a late write with the dead
// holder's token is refused.
//
//	go run ./examples/lock
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"sync"
	"syscall"
	"time"

	"github.com/goray/goray/actor"
	"github.com/goray/goray/coord"
	"github.com/goray/goray/objectstore"
	"github.com/goray/goray/runtime"
)

const (
	lockName   = "/examples/lock/ledger"
	ledgerName = "ledger"
	sessionTTL = 2 * time.Second
	rounds     = 10
)

// Write is one write to the ledger.
type Write struct {
	Token int64  `msgpack:"token"`
	Who   string `msgpack:"who"`
}

// Ledger is the guarded resource. mu guards its fields.
type Ledger struct {
	mu       sync.Mutex
	maxToken int64
	writes   []Write
	at       []time.Time
	changed  chan struct{}
}

// Write accepts w if its token is at least the largest seen.
func (l *Ledger) Write(_ context.Context, w Write) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if w.Token < l.maxToken {
		return 0, fmt.Errorf("stale fencing token %d from %s: token %d was already seen", w.Token, w.Who, l.maxToken)
	}
	l.maxToken = w.Token
	l.writes = append(l.writes, w)
	l.at = append(l.at, time.Now())
	if l.changed != nil {
		close(l.changed)
	}
	l.changed = make(chan struct{})
	return len(l.writes), nil
}

// Holding waits until who has made n writes and is the latest writer, and
// returns its token.
func (l *Ledger) Holding(ctx context.Context, who string, n int) (int64, error) {
	for {
		l.mu.Lock()
		count := 0
		for _, w := range l.writes {
			if w.Who == who {
				count++
			}
		}
		if count >= n && l.writes[len(l.writes)-1].Who == who {
			tok := l.writes[len(l.writes)-1].Token
			l.mu.Unlock()
			return tok, nil
		}
		if l.changed == nil {
			l.changed = make(chan struct{})
		}
		ch := l.changed
		l.mu.Unlock()
		select {
		case <-ch:
		case <-ctx.Done():
			return 0, ctx.Err()
		}
	}
}

// FirstAfter is the time (Unix ns) of the first write with a token larger
// than token, waiting for one.
func (l *Ledger) FirstAfter(ctx context.Context, token int64) (int64, error) {
	for {
		l.mu.Lock()
		for i, w := range l.writes {
			if w.Token > token {
				t := l.at[i].UnixNano()
				l.mu.Unlock()
				return t, nil
			}
		}
		if l.changed == nil {
			l.changed = make(chan struct{})
		}
		ch := l.changed
		l.mu.Unlock()
		select {
		case <-ch:
		case <-ctx.Done():
			return 0, ctx.Err()
		}
	}
}

// Increasing reports whether the accepted tokens only grew (each holder may
// write more than once under one token).
func (l *Ledger) Increasing(context.Context) (bool, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for i := 1; i < len(l.writes); i++ {
		if l.writes[i].Token < l.writes[i-1].Token {
			return false, nil
		}
	}
	return len(l.writes) > 0, nil
}

// Contender takes the lock in a loop and writes to the ledger under it.
type Contender struct{}

// Run takes the lock rounds times; on round holdAt (if >= 0) it keeps it
// until its process dies.
func (*Contender) Run(ctx context.Context, who string, holdAt int) (int, error) {
	c, err := coord.Connect(ctx)
	if err != nil {
		return 0, err
	}
	defer c.Close()
	s, err := c.NewSession(ctx, coord.WithTTL(sessionTTL))
	if err != nil {
		return 0, err
	}
	defer s.Close()
	ledger, err := actor.Get(ctx, ledgerType, ledgerName)
	if err != nil {
		return 0, err
	}
	for i := range rounds {
		l, err := s.Lock(ctx, lockName, coord.WithAcquireTimeout(time.Minute))
		if err != nil {
			return i, err
		}
		if _, err := ledgerWrite.Remote(ctx, ledger, objectstore.Val(Write{Token: l.Token(), Who: who})).Get(ctx); err != nil {
			return i, err
		}
		if i == holdAt {
			<-ctx.Done() // hold the lock until this process is killed
			return i, ctx.Err()
		}
		if err := l.Unlock(ctx); err != nil {
			return i, err
		}
	}
	return rounds, nil
}

// Pid is the contender's (or ledger's) process.
func (*Contender) Pid(context.Context) (int, error) { return os.Getpid(), nil }

// Pid is the ledger's process.
func (*Ledger) Pid(context.Context) (int, error) { return os.Getpid(), nil }

var (
	ledgerType       = actor.Register("lock.ledger", func() *Ledger { return &Ledger{} })
	ledgerWrite      = actor.Method1(ledgerType, "write", (*Ledger).Write)
	ledgerHolding    = actor.Method2(ledgerType, "holding", (*Ledger).Holding)
	ledgerFirstAfter = actor.Method1(ledgerType, "first_after", (*Ledger).FirstAfter)
	ledgerIncreasing = actor.Method0(ledgerType, "increasing", (*Ledger).Increasing)
	ledgerPid        = actor.Method0(ledgerType, "pid", (*Ledger).Pid)
	contenderType    = actor.Register("lock.contender", func() *Contender { return &Contender{} })
	contenderRun     = actor.Method2(contenderType, "run", (*Contender).Run)
	contenderPid     = actor.Method0(contenderType, "pid", (*Contender).Pid)
)

func main() {
	runtime.ServeIfWorker()
	if err := run(context.Background(), os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "lock:", err)
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

	// Its waiting calls (Holding, FirstAfter) must not block the writes.
	ledger, err := actor.Spawn(ctx, ledgerType, actor.WithName(ledgerName), actor.WithMaxConcurrency(8))
	if err != nil {
		return err
	}
	lpid, err := ledgerPid.Remote(ctx, ledger).Get(ctx)
	if err != nil {
		return err
	}
	const n = 3
	contenders := make([]actor.Handle[Contender], n)
	victim := -1
	pids := make([]int, n)
	for i := range contenders {
		if contenders[i], err = actor.Spawn(ctx, contenderType); err != nil {
			return err
		}
		if pids[i], err = contenderPid.Remote(ctx, contenders[i]).Get(ctx); err != nil {
			return err
		}
		if victim < 0 && pids[i] != lpid {
			victim = i
		}
	}
	if victim < 0 {
		return errors.New("every contender shares the ledger's process (a one-CPU machine?): there is no holder to kill without killing the ledger")
	}
	fmt.Fprintf(out, "a ledger actor and %d contender actors started\n", n)
	runs := make([]objectstore.Ref[int], n)
	for i, h := range contenders {
		holdAt := -1
		if i == victim {
			holdAt = rounds / 2
		}
		runs[i] = contenderRun.Remote(ctx, h, objectstore.Val(fmt.Sprintf("contender-%d", i)), objectstore.Val(holdAt))
	}
	// The victim holds the lock (it wrote its round's entry and keeps it).
	token, err := ledgerHolding.Remote(ctx, ledger, objectstore.Val(fmt.Sprintf("contender-%d", victim)), objectstore.Val(rounds/2+1)).Get(ctx)
	if err != nil {
		return err
	}
	killed := time.Now()
	if err := syscall.Kill(pids[victim], syscall.SIGKILL); err != nil {
		return fmt.Errorf("kill -9 %d: %w", pids[victim], err)
	}
	fmt.Fprintln(out, "the holder's process was killed with kill -9 while it held the lock")

	// This driver contends too, so that someone takes the lock even if
	// every contender shared the victim's process.
	s, err := c.NewSession(ctx, coord.WithTTL(sessionTTL))
	if err != nil {
		return err
	}
	defer s.Close()
	l, err := s.Lock(ctx, lockName, coord.WithAcquireTimeout(30*time.Second))
	if err != nil {
		return err
	}
	if _, err := ledgerWrite.Remote(ctx, ledger, objectstore.Val(Write{Token: l.Token(), Who: "driver"})).Get(ctx); err != nil {
		return err
	}
	next, err := ledgerFirstAfter.Remote(ctx, ledger, objectstore.Val(token)).Get(ctx)
	if err != nil {
		return err
	}
	fmt.Fprintf(out, "the next holder got the lock %.1fs after the kill (session TTL %ds)\n",
		time.Unix(0, next).Sub(killed).Seconds(), int(sessionTTL.Seconds()))
	// The dead holder's token, late (as a paused holder would write).
	_, err = ledgerWrite.Remote(ctx, ledger, objectstore.Val(Write{Token: token, Who: "the dead holder"})).Get(ctx)
	if err == nil {
		return errors.New("the ledger accepted a stale fencing token")
	}
	fmt.Fprintln(out, "a write with the dead holder's token: rejected (stale fencing token)")
	if err := l.Unlock(ctx); err != nil {
		return err
	}
	// The contenders that shared no process with the victim finish their
	// rounds; the victim's (and its process-mates') calls fail.
	for i, r := range runs {
		got, err := r.Get(ctx)
		switch {
		case pids[i] == pids[victim] && err == nil:
			return fmt.Errorf("contender %d shared the killed process but its run succeeded", i)
		case pids[i] != pids[victim] && (err != nil || got != rounds):
			return fmt.Errorf("contender %d: %d rounds, %v", i, got, err)
		}
	}
	ok, err := ledgerIncreasing.Remote(ctx, ledger).Get(ctx)
	if err != nil {
		return err
	}
	if !ok {
		return errors.New("the ledger saw a fencing token go back")
	}
	fmt.Fprintln(out, "the ledger saw only increasing fencing tokens")
	return nil
}
