package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/goray/goray/actor"
	"github.com/goray/goray/internal/core"
	"github.com/goray/goray/objectstore"
	"github.com/goray/goray/runtime"
	"github.com/goray/goray/task"
)

// Item is a chaos task's result; every 100th carries a stored blob.
type Item struct {
	I    int
	Sq   int
	Blob []byte
	Node string
}

// chaosBlob is what task i's blob must hold.
func chaosBlob(i int) []byte { return gen(uint64(i), 150<<10) }

// Ledger is an actor whose calls leave a line in a file outside the actor,
// so that how often each call ran survives the actor's restarts.
type Ledger struct{}

// Entry is one call: the ledger file and the call's ID.
type Entry struct {
	File string
	ID   string
}

// Where is the node the actor runs on.
func (l *Ledger) Where(context.Context) (string, error) { return os.Getenv("GORAY_NODE_ID"), nil }

// Record appends the call's ID to the ledger file.
func (l *Ledger) Record(_ context.Context, e Entry) (string, error) {
	callID := e.ID
	f, err := os.OpenFile(e.File, os.O_APPEND|os.O_CREATE|os.O_WRONLY, 0o600)
	if err != nil {
		return "", err
	}
	defer f.Close()
	if _, err := f.WriteString(callID + "\n"); err != nil {
		return "", err
	}
	time.Sleep(2 * time.Millisecond)
	return callID, nil
}

var (
	chaosTask = task.Register1("e2e.chaos_item", func(_ context.Context, i int) (Item, error) {
		time.Sleep(3 * time.Millisecond)
		it := Item{I: i, Sq: i * i, Node: os.Getenv("GORAY_NODE_ID")}
		if i%100 == 0 {
			it.Blob = chaosBlob(i)
		}
		return it, nil
	})
	ledgerType   = actor.Register("e2e.ledger", func() *Ledger { return &Ledger{} })
	ledgerRecord = actor.Method1(ledgerType, "record", (*Ledger).Record)
	ledgerWhere  = actor.Method0(ledgerType, "where", (*Ledger).Where)
)

// chaos runs a job of tasks and stateful actors for E2E_CHAOS_SECONDS while
// the test kills, stops and restarts processes under it, then checks that
// every task result is present and correct and that every at-most-once
// actor call ran at most once (exactly once when it succeeded).
func chaos(ctx context.Context) error {
	ledger, err := need("E2E_LEDGER")
	if err != nil {
		return err
	}
	secs, err := strconv.Atoi(os.Getenv("E2E_CHAOS_SECONDS"))
	if err != nil {
		return fmt.Errorf("E2E_CHAOS_SECONDS: %w", err)
	}
	const tasks = 3000
	spread := task.WithStrategy(runtime.SpreadStrategy())
	victimList := strings.Split(os.Getenv("E2E_VICTIMS"), ",")
	// Half the tasks go to the nodes the chaos will hit (soft affinity: once
	// a node is gone they run anywhere), half are spread.
	placeTask := func(i int) task.Option {
		if i%2 == 1 {
			return spread
		}
		return task.WithStrategy(runtime.NodeAffinity(victimList[(i/2)%len(victimList)], true))
	}
	refs := make([]objectstore.Ref[Item], tasks)
	type actorSet struct {
		kind    string
		handles []actor.Handle[Ledger]
	}
	sets := []actorSet{{kind: "amo"}, {kind: "alo"}}
	// Actors start on the nodes the chaos will hit (soft affinity: once
	// those die, their restarts go anywhere).
	victims := strings.Split(os.Getenv("E2E_VICTIMS"), ",")
	onVictim := func(i int) actor.Option {
		return actor.WithStrategy(runtime.NodeAffinity(victims[i%len(victims)], true))
	}
	for i := range 4 {
		h, err := actor.Spawn(ctx, ledgerType, actor.WithMaxRestarts(-1), onVictim(i))
		if err != nil {
			return fmt.Errorf("spawn at-most-once actor: %w", err)
		}
		sets[0].handles = append(sets[0].handles, h)
	}
	for i := range 2 {
		h, err := actor.Spawn(ctx, ledgerType, actor.WithMaxRestarts(-1), actor.WithMaxTaskRetries(-1), onVictim(i+1))
		if err != nil {
			return fmt.Errorf("spawn at-least-once actor: %w", err)
		}
		sets[1].handles = append(sets[1].handles, h)
	}
	var where []string
	for _, set := range sets {
		for _, h := range set.handles {
			n, err := ledgerWhere.Remote(ctx, h).Get(ctx)
			if err != nil {
				return err
			}
			where = append(where, n[:8])
		}
	}
	fmt.Println("ACTORS ON", strings.Join(where, " "))
	fmt.Println("READY")

	// Tasks trickle in over the chaos window, actor calls go on throughout.
	end := time.Now().Add(time.Duration(secs) * time.Second)
	outcomes := map[string]error{}
	var mu sync.Mutex
	var wg sync.WaitGroup
	submitted, seq := 0, 0
	for time.Now().Before(end) {
		for n := 0; n < 60 && submitted < tasks; n++ {
			refs[submitted] = chaosTask.Remote(ctx, objectstore.Val(submitted), task.WithMaxRetries(-1), placeTask(submitted))
			submitted++
		}
		for _, set := range sets {
			for hi, h := range set.handles {
				id := fmt.Sprintf("%s-%d-%d", set.kind, hi, seq)
				ref := ledgerRecord.Remote(ctx, h, objectstore.Val(Entry{File: ledger, ID: id}))
				wg.Add(1)
				go func() {
					defer wg.Done()
					cctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
					defer cancel()
					_, err := ref.Get(cctx)
					mu.Lock()
					outcomes[id] = err
					mu.Unlock()
				}()
			}
		}
		seq++
		time.Sleep(100 * time.Millisecond)
	}
	for ; submitted < tasks; submitted++ {
		refs[submitted] = chaosTask.Remote(ctx, objectstore.Val(submitted), task.WithMaxRetries(-1), placeTask(submitted))
	}
	fmt.Println("CHAOS DONE")
	wg.Wait()

	for i, r := range refs {
		it, err := r.Get(ctx)
		if err != nil {
			return fmt.Errorf("task %d: %w", i, err)
		}
		if it.I != i || it.Sq != i*i {
			return fmt.Errorf("task %d: got %+v", i, it)
		}
		if i%100 == 0 && !bytes.Equal(it.Blob, chaosBlob(i)) {
			return fmt.Errorf("task %d: its blob is wrong (%d bytes)", i, len(it.Blob))
		}
	}

	nodes := map[string]int{}
	for _, r := range refs {
		if it, err := r.Get(ctx); err == nil {
			nodes[it.Node[:8]]++
		}
	}
	fmt.Println("TASKS BY NODE", nodes)
	raw, err := os.ReadFile(ledger)
	if err != nil {
		return err
	}
	ran := map[string]int{}
	for _, l := range strings.Split(strings.TrimSpace(string(raw)), "\n") {
		ran[l]++
	}
	var amoOK, amoFailed, aloOK, aloFailed, aloTwice int
	for id, err := range outcomes {
		n := ran[id]
		switch {
		case strings.HasPrefix(id, "amo"):
			if n > 1 {
				return fmt.Errorf("at-most-once call %s ran %d times", id, n)
			}
			if err == nil && n != 1 {
				return fmt.Errorf("at-most-once call %s succeeded but ran %d times", id, n)
			}
			if err != nil {
				if !errors.Is(err, runtime.ErrWorkerCrashed) && !errors.Is(err, runtime.ErrActorDied) {
					return fmt.Errorf("at-most-once call %s failed with an unexpected error: %w", id, err)
				}
				amoFailed++
			} else {
				amoOK++
			}
		default:
			if err == nil && n < 1 {
				return fmt.Errorf("at-least-once call %s succeeded but never ran", id)
			}
			if err != nil {
				aloFailed++
			} else {
				aloOK++
			}
			if n > 1 {
				aloTwice++
			}
		}
	}
	c, _ := core.Current()
	st := c.Stats()
	fmt.Printf("CHAOS OK tasks=%d task_retries=%d actor_call_retries=%d reconstructed=%d amo_ok=%d amo_failed=%d alo_ok=%d alo_failed=%d alo_ran_twice=%d\n",
		tasks, st.TaskRetries.Load(), st.ActorRetries(), st.Reconstructed.Load(), amoOK, amoFailed, aloOK, aloFailed, aloTwice)
	return nil
}
