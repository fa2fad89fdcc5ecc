// Package cache is the machinery of goray's distributed cache (the SDK
// façade is the top-level cache package): the shard actor type, its LRU
// store with TTLs and compute leases, the consistent-hash ring that maps
// keys to shards, and the payload-level Client that the SDK and the
// ClientService gateway share.
//
// The shard type is registered at package init under ShardType. Every goray
// program links this package (runtime → embed → gateway → cache), so every
// job's workers can host shards: a cache needs no binary of its own.
//
// See docs/storage.md ("Cache") for the rules.
package cache
