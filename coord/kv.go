package coord

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/goray/goray/internal/errs"
)

// KV is one key's value and its revisions (etcd's mvccpb.KeyValue).
type KV struct {
	Key   string
	Value []byte
	// CreateRevision is the revision that created the key (since its last
	// deletion); ModRevision the one that last wrote it; Version the number
	// of writes since it was created.
	CreateRevision, ModRevision, Version int64
	// Lease is the lease (session) the key is attached to; 0 for none.
	Lease int64
}

func fromKV(kv *mvccpb.KeyValue) KV {
	return KV{Key: string(kv.Key), Value: kv.Value, CreateRevision: kv.CreateRevision,
		ModRevision: kv.ModRevision, Version: kv.Version, Lease: kv.Lease}
}

// Get reads key (a linearizable read). A missing key is ErrNotFound.
func (c *Client) Get(ctx context.Context, key string) (KV, error) {
	return c.get(ctx, key)
}

// GetAt reads key as it was at revision rev (etcd keeps history until it
// is compacted: a compacted rev is ErrCompacted with the compact revision).
func (c *Client) GetAt(ctx context.Context, key string, rev int64) (KV, error) {
	return c.get(ctx, key, clientv3.WithRev(rev))
}

func (c *Client) get(ctx context.Context, key string, opts ...clientv3.OpOption) (KV, error) {
	if key == "" {
		return KV{}, errs.New(errs.KindInvalidArgument, "", "get: empty key: etcd keys are 1 byte or more")
	}
	resp, err := c.cli.Get(ctx, key, opts...)
	if err != nil {
		return KV{}, c.convertRev(ctx, err, fmt.Sprintf("get %q", key))
	}
	if len(resp.Kvs) == 0 {
		return KV{}, errs.New(errs.KindNotFound, "", "key %q does not exist (at revision %d)", key, resp.Header.Revision)
	}
	return fromKV(resp.Kvs[0]), nil
}

// PutOption configures Put.
type PutOption interface{ applyPut(*putOpts) }

type putOpts struct{ lease clientv3.LeaseID }

type putFunc func(*putOpts)

func (f putFunc) applyPut(o *putOpts) { f(o) }

// WithSession attaches the key to s's lease: it is deleted when the session
// ends (its process died, or Close). Default: no lease, the key stays.
func WithSession(s *Session) PutOption {
	return putFunc(func(o *putOpts) { o.lease = s.s.Lease() })
}

// Put writes key and returns the revision of the write.
func (c *Client) Put(ctx context.Context, key string, value []byte, opts ...PutOption) (int64, error) {
	if err := c.checkSize(key, value); err != nil {
		return 0, err
	}
	var o putOpts
	for _, op := range opts {
		op.applyPut(&o)
	}
	var eo []clientv3.OpOption
	if o.lease != 0 {
		eo = append(eo, clientv3.WithLease(o.lease))
	}
	resp, err := c.cli.Put(ctx, key, string(value), eo...)
	if err != nil {
		return 0, convert(err, fmt.Sprintf("put %q", key))
	}
	return resp.Header.Revision, nil
}

// Delete deletes key and returns whether it existed and the revision after.
func (c *Client) Delete(ctx context.Context, key string) (bool, int64, error) {
	if key == "" {
		return false, 0, errs.New(errs.KindInvalidArgument, "", "delete: empty key: etcd keys are 1 byte or more")
	}
	resp, err := c.cli.Delete(ctx, key)
	if err != nil {
		return false, 0, convert(err, fmt.Sprintf("delete %q", key))
	}
	return resp.Deleted > 0, resp.Header.Revision, nil
}

// DeletePrefix deletes every key under prefix and returns how many.
func (c *Client) DeletePrefix(ctx context.Context, prefix string) (int64, int64, error) {
	if prefix == "" {
		return 0, 0, errs.New(errs.KindInvalidArgument, "", "delete prefix: an empty prefix would delete every key; name a prefix")
	}
	resp, err := c.cli.Delete(ctx, prefix, clientv3.WithPrefix())
	if err != nil {
		return 0, 0, convert(err, fmt.Sprintf("delete prefix %q", prefix))
	}
	return resp.Deleted, resp.Header.Revision, nil
}

// Range reads every key under prefix in key order, as of one revision
// (returned), at most limit of them (0: all).
func (c *Client) Range(ctx context.Context, prefix string, limit int64) ([]KV, int64, error) {
	return c.RangeAt(ctx, prefix, limit, 0)
}

// RangeAt is Range as of revision rev (0: now).
func (c *Client) RangeAt(ctx context.Context, prefix string, limit, rev int64) ([]KV, int64, error) {
	if prefix == "" {
		return nil, 0, errs.New(errs.KindInvalidArgument, "", "range: empty prefix; name a prefix (\"/\" for keys starting with a slash)")
	}
	opts := []clientv3.OpOption{clientv3.WithPrefix(), clientv3.WithLimit(limit)}
	if rev > 0 {
		opts = append(opts, clientv3.WithRev(rev))
	}
	resp, err := c.cli.Get(ctx, prefix, opts...)
	if err != nil {
		return nil, 0, c.convertRev(ctx, err, fmt.Sprintf("range %q", prefix))
	}
	out := make([]KV, len(resp.Kvs))
	for i, kv := range resp.Kvs {
		out[i] = fromKV(kv)
	}
	return out, resp.Header.Revision, nil
}

// CompareAndSwap writes key only if its ModRevision is still modRev (0:
// only if the key does not exist). It returns the revision of the write
// and true, or, when the key had changed, its current state (Key empty
// when it is absent) and false.
func (c *Client) CompareAndSwap(ctx context.Context, key string, modRev int64, value []byte, opts ...PutOption) (int64, bool, KV, error) {
	if err := c.checkSize(key, value); err != nil {
		return 0, false, KV{}, err
	}
	if modRev < 0 {
		return 0, false, KV{}, errs.New(errs.KindInvalidArgument, "", "compare-and-swap %q: revision %d: want the key's ModRevision, or 0 for a key that must not exist", key, modRev)
	}
	var o putOpts
	for _, op := range opts {
		op.applyPut(&o)
	}
	var po []clientv3.OpOption
	if o.lease != 0 {
		po = append(po, clientv3.WithLease(o.lease))
	}
	resp, err := c.cli.Txn(ctx).
		If(clientv3.Compare(clientv3.ModRevision(key), "=", modRev)).
		Then(clientv3.OpPut(key, string(value), po...)).
		Else(clientv3.OpGet(key)).Commit()
	if err != nil {
		return 0, false, KV{}, convert(err, fmt.Sprintf("compare-and-swap %q", key))
	}
	if resp.Succeeded {
		return resp.Header.Revision, true, KV{}, nil
	}
	var cur KV
	if kvs := resp.Responses[0].GetResponseRange().GetKvs(); len(kvs) > 0 {
		cur = fromKV(kvs[0])
	}
	return resp.Header.Revision, false, cur, nil
}

// CompareAndDelete deletes key only if its ModRevision is still modRev.
func (c *Client) CompareAndDelete(ctx context.Context, key string, modRev int64) (int64, bool, error) {
	if key == "" || modRev <= 0 {
		return 0, false, errs.New(errs.KindInvalidArgument, "", "compare-and-delete %q at revision %d: want a key and its ModRevision", key, modRev)
	}
	resp, err := c.cli.Txn(ctx).
		If(clientv3.Compare(clientv3.ModRevision(key), "=", modRev)).
		Then(clientv3.OpDelete(key)).Commit()
	if err != nil {
		return 0, false, convert(err, fmt.Sprintf("compare-and-delete %q", key))
	}
	return resp.Header.Revision, resp.Succeeded, nil
}

// Txn is etcd's transaction on the raw client (If/Then/Else of
// clientv3.Cmp and clientv3.Op); commit it with Commit below to get goray's
// errors.
func (c *Client) Txn(ctx context.Context) clientv3.Txn { return c.cli.Txn(ctx) }

// Commit commits t and converts its error.
func Commit(t clientv3.Txn) (*clientv3.TxnResponse, error) {
	resp, err := t.Commit()
	return resp, convert(err, "transaction")
}

// Compact compacts etcd's history up to rev (etcd's root user only; the
// head compacts on its own, keeping an hour).
func (c *Client) Compact(ctx context.Context, rev int64) error {
	_, err := c.cli.Compact(ctx, rev, clientv3.WithCompactPhysical())
	return convert(err, fmt.Sprintf("compact to revision %d", rev))
}

// GetJSON reads key and decodes its value, JSON, into a T.
func GetJSON[T any](ctx context.Context, c *Client, key string) (T, KV, error) {
	var v T
	kv, err := c.Get(ctx, key)
	if err != nil {
		return v, kv, err
	}
	if err := json.Unmarshal(kv.Value, &v); err != nil {
		return v, kv, errs.New(errs.KindInvalidArgument, "", "key %q does not hold the JSON of a %T: %v", key, v, err)
	}
	return v, kv, nil
}

// PutJSON writes v's JSON under key and returns the revision.
func PutJSON[T any](ctx context.Context, c *Client, key string, v T, opts ...PutOption) (int64, error) {
	b, err := json.Marshal(v)
	if err != nil {
		return 0, errs.New(errs.KindInvalidArgument, "", "put %q: encode a %T as JSON: %v", key, v, err)
	}
	return c.Put(ctx, key, b, opts...)
}

// CompareAndSwapJSON is CompareAndSwap of v's JSON.
func CompareAndSwapJSON[T any](ctx context.Context, c *Client, key string, modRev int64, v T) (int64, bool, KV, error) {
	b, err := json.Marshal(v)
	if err != nil {
		return 0, false, KV{}, errs.New(errs.KindInvalidArgument, "", "compare-and-swap %q: encode a %T as JSON: %v", key, v, err)
	}
	return c.CompareAndSwap(ctx, key, modRev, b)
}

// convertRev converts a read's error; a compacted revision gets the
// compact revision (read from etcd's status).
func (c *Client) convertRev(ctx context.Context, err error, what string) error {
	e := convert(err, what)
	var ge *errs.Error
	if errors.As(e, &ge) && ge.Kind == errs.KindCompacted {
		if rev, serr := c.compactRevision(ctx); serr == nil {
			ge.Revision = rev
			ge.Message += fmt.Sprintf(" (compacted up to revision %d)", rev)
		}
	}
	return e
}

// compactRevision is the revision etcd has compacted up to: a Get at
// revision 1 fails and says nothing, so ask with a watch, which answers a
// compacted start with the compact revision.
func (c *Client) compactRevision(ctx context.Context) (int64, error) {
	wctx, cancel := context.WithTimeout(clientv3.WithRequireLeader(ctx), 5*time.Second)
	defer cancel()
	for resp := range c.cli.Watch(wctx, "\x00", clientv3.WithRev(1)) {
		if resp.CompactRevision > 0 {
			return resp.CompactRevision, nil
		}
		if err := resp.Err(); err != nil {
			return 0, err
		}
		return 0, fmt.Errorf("no compaction")
	}
	return 0, fmt.Errorf("watch ended")
}
