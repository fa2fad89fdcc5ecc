// Package coord is goray's coordination service (the seed's ZooKeeper), on
// the etcd the head embeds (or an external etcd cluster): linearizable keys
// with revisions, compare-and-swap, watches that resume from a revision,
// sessions whose lease lives as long as the process that holds it, locks
// with fencing tokens, and leader election.
//
//	c, err := coord.Connect(ctx) // after runtime.Init, or with GORAY_ADDRESS
//	defer c.Close()
//	rev, err := c.Put(ctx, "/config/rate", []byte("10"))
//	kv, err := c.Get(ctx, "/config/rate")
//	_, ok, cur, err := c.CompareAndSwap(ctx, "/config/rate", kv.ModRevision, []byte("20"))
//	w := c.Watch(ctx, "/config/", coord.WithPrefix(), coord.FromRevision(rev+1))
//	for ev := range w.C { ... }               // then w.Err(), w.Next()
//	l, err := c.Lock(ctx, "/locks/db", coord.WithAcquireTimeout(5*time.Second))
//	resource.Write(l.Token(), ...)            // the fencing token
//	l.Unlock(ctx)
//
// Connect asks the head, over the cluster's authenticated gRPC, for etcd's
// endpoint and the cluster's etcd credentials, so drivers, workers and
// actors' processes on any node connect the same way. The raw etcd client
// is Raw. Errors are goray's (runtime.ErrCompacted, ErrLockTimeout,
// ErrSessionLost, ErrPermissionDenied, ...), each saying what to do. The
// guarantees, the limits and ZooKeeper's recipes in terms of these calls are
// in docs/coordination.md.
package coord
