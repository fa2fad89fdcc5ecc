package testcluster

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/goray/goray/cache"
	icache "github.com/goray/goray/internal/cache"
	"github.com/goray/goray/internal/testwait"
	"github.com/goray/goray/runtime"
)

// CacheNodeDeath is the cache's node-loss rule: a cache with a shard on
// each of two nodes; the node of one shard dies. Reads of that shard's keys
// are misses, not errors (from the moment the loss is noticed, before the
// node is declared dead), its writes are dropped, GetOrCompute computes
// uncached, the other shard keeps its entries; once the shard is restarted
// (empty) on a live node it stores and serves again.
func CacheNodeDeath(t *testing.T, c Cluster) {
	ctx, cancel := context.WithTimeout(t.Context(), 3*time.Minute)
	defer cancel()
	victim := c.AddNode(t, map[string]float64{"CPU": 2})
	nodes, err := runtime.Nodes(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var keep string
	for _, n := range nodes {
		if n.Alive && n.ID != victim.ID() {
			keep = n.ID
			break
		}
	}
	name := fmt.Sprintf("nodedeath-%d", time.Now().UnixNano())
	ch, err := cache.New[string](ctx, name, cache.WithShards(2), cache.WithNodes(keep, victim.ID()), cache.WithNamespace(Namespace))
	if err != nil {
		t.Fatalf("cache.New: %v", err)
	}
	t.Cleanup(func() {
		dctx, dcancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer dcancel()
		_ = ch.Destroy(dctx)
		ch.Close()
	})
	st, err := ch.Stats(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if st.Shards[0].Node != keep || st.Shards[1].Node != victim.ID() {
		t.Fatalf("shards on nodes %q and %q, want %q and the victim %q", st.Shards[0].Node, st.Shards[1].Node, keep, victim.ID())
	}
	const n = 200
	direct := icache.DataPathReplies()
	for i := range n {
		if err := ch.Set(ctx, fmt.Sprint(i), fmt.Sprint("v", i)); err != nil {
			t.Fatal(err)
		}
	}
	if got := icache.DataPathReplies() - direct; got < n {
		t.Fatalf("%d of %d sets answered on the data path, want all", got, n)
	}
	st, _ = ch.Stats(ctx)
	onVictim := st.Shards[1].Entries
	if onVictim == 0 || onVictim == n {
		t.Fatalf("entries on the victim's shard: got %d of %d, want some", onVictim, n)
	}

	victim.Kill(t)
	// Every read answers; the victim's keys turn into misses.
	testwait.Eventually(t, 60*time.Second, "the victim's shard to read as misses", func() bool {
		misses := 0
		for i := range n {
			v, ok, err := ch.Get(ctx, fmt.Sprint(i))
			if err != nil {
				t.Fatalf("get %d after the node died: got error %v, want a hit or a miss", i, err)
			}
			if !ok {
				misses++
			} else if v != fmt.Sprint("v", i) {
				t.Fatalf("get %d: got %q, want %q", i, v, fmt.Sprint("v", i))
			}
		}
		return int64(misses) == onVictim
	})
	// Writes and computations of the lost shard's keys do not fail. (The
	// shard may already be back: the head learns of a dead node as soon as
	// a peer cannot reach it, so the set may have been stored.)
	lostKey := ""
	for i := range n {
		if _, ok, _ := ch.Get(ctx, fmt.Sprint(i)); !ok {
			lostKey = fmt.Sprint(i)
			break
		}
	}
	if err := ch.Set(ctx, lostKey, "again"); err != nil {
		t.Fatalf("set on the lost shard: got %v, want nil (dropped)", err)
	}
	if v, err := ch.GetOrCompute(ctx, lostKey, func(context.Context) (string, error) { return "computed", nil }); err != nil || (v != "computed" && v != "again") {
		t.Fatalf("get-or-compute on the lost shard: got %q, %v; want computed (or again, once it is back)", v, err)
	}
	// Recovery: the shard is restarted on a live node, empty, and serves.
	testwait.Eventually(t, 90*time.Second, "the lost shard to store and serve again", func() bool {
		if err := ch.Set(ctx, lostKey, "recovered"); err != nil {
			t.Fatalf("set during recovery: %v", err)
		}
		v, ok, err := ch.Get(ctx, lostKey)
		return err == nil && ok && v == "recovered"
	})
	// The restarted shard is reached on the data path again (its handle
	// learnt the new location from the actor call that found it).
	direct = icache.DataPathReplies()
	for range 20 {
		if _, ok, err := ch.Get(ctx, lostKey); !ok || err != nil {
			t.Fatalf("get of the recovered key: got %v, %v; want a hit", ok, err)
		}
	}
	if got := icache.DataPathReplies() - direct; got < 20 {
		t.Fatalf("after recovery %d of 20 gets answered on the data path, want all", got)
	}
	st, err = ch.Stats(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if st.Total.Unavailable != 0 || st.Shards[1].Node == victim.ID() || st.Shards[1].Node == "" {
		t.Fatalf("after recovery: shard 1 on %q, %d unavailable; want it on a live node, none unavailable", st.Shards[1].Node, st.Total.Unavailable)
	}
	if st.Shards[0].Entries != int64(n)-onVictim {
		t.Fatalf("surviving shard: got %d entries, want %d", st.Shards[0].Entries, int64(n)-onVictim)
	}
}
