package cache

import (
	"context"

	icache "github.com/goray/goray/internal/cache"
	"github.com/goray/goray/internal/errs"
)

// Updater is an update function registered with RegisterUpdate.
type Updater[V, A any] struct{ name string }

// RegisterUpdate registers fn under name as an update function that
// Update runs in a key's shard, atomically: fn gets the key's value (ok
// false when it has none) and Update's argument, and returns the new value,
// or drop true to delete the key. Call it at package level: shards run in
// the job's worker processes and find fn there by name.
func RegisterUpdate[V, A any](name string, fn func(old V, ok bool, arg A) (v V, drop bool, err error)) Updater[V, A] {
	icache.RegisterUpdate(name, func(old icache.Value, ok bool, arg icache.Value) (icache.Value, bool, error) {
		var o V
		if ok {
			x, err := decode[V]("", old)
			if err != nil {
				return icache.Value{}, false, err
			}
			o = x
		}
		a, err := decode[A]("", arg)
		if err != nil {
			return icache.Value{}, false, err
		}
		v, drop, err := fn(o, ok, a)
		if err != nil || drop {
			return icache.Value{}, drop, err
		}
		nv, err := encode(v)
		return nv, false, err
	})
	return Updater[V, A]{name}
}

// Update applies u to key's value in its shard with arg, atomically, and
// returns the new value (ok false when u dropped the key). An error of u
// or a panic in it fails with runtime.ErrInvalidArgument; a lost shard with
// runtime.ErrUnavailable.
func Update[V, A any](ctx context.Context, c *Cache[V], u Updater[V, A], key string, arg A, opts ...SetOption) (V, bool, error) {
	var zero V
	a, err := encode(arg)
	if err != nil {
		return zero, false, err
	}
	r, err := c.cl.Do(ctx, icache.Request{Op: icache.OpUpdate, Key: key, Fn: u.name, Val: a, TTLms: setOpts(opts).ttlMs})
	switch {
	case err != nil:
		return zero, false, err
	case r.Code == icache.CodeMiss:
		return zero, false, nil
	case r.Code == icache.CodeHit:
		v, err := decode[V](key, r.Val)
		return v, err == nil, err
	case r.Code == icache.CodeError:
		return zero, false, errs.New(errs.KindInvalidArgument, key, "cache: %s", r.Err)
	}
	return zero, false, shardErr(r)
}
