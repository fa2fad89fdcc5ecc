package cache

import (
	"container/list"
	"time"
)

// Value is a cached value as it travels: an encoding (goray.v1.Encoding)
// and its bytes.
type Value struct {
	Enc  int32  `msgpack:"e"`
	Data []byte `msgpack:"d"`
}

// entryOverhead is what an entry costs beyond its key and data, in the
// byte accounting of a capacity (map slot, list element, bookkeeping).
const entryOverhead = 64

// entry is one key's value in an lru.
type entry struct {
	key     string
	val     Value
	expires time.Time // zero: never
	size    int64
}

// lru is a store of entries bounded by count and bytes that evicts the
// least recently used entry first; entries past their expiry are gone.
// It is not safe for concurrent use: its shard's lock guards it.
type lru struct {
	maxEntries int        // 0: no bound
	maxBytes   int64      // 0: no bound
	order      *list.List // front: most recently used; values *entry
	byKey      map[string]*list.Element
	bytes      int64

	evictions, expirations uint64
}

func newLRU(maxEntries int, maxBytes int64) *lru {
	return &lru{maxEntries: maxEntries, maxBytes: maxBytes, order: list.New(), byKey: map[string]*list.Element{}}
}

func entrySize(key string, v Value) int64 { return int64(len(key)+len(v.Data)) + entryOverhead }

// get returns key's value and marks it used; an expired entry is removed
// and reported as absent.
func (l *lru) get(key string, now time.Time) (Value, bool) {
	el, ok := l.byKey[key]
	if !ok {
		return Value{}, false
	}
	e := el.Value.(*entry)
	if !e.expires.IsZero() && !now.Before(e.expires) {
		l.remove(el)
		l.expirations++
		return Value{}, false
	}
	l.order.MoveToFront(el)
	return e.val, true
}

// peek is get without marking the entry used.
func (l *lru) peek(key string, now time.Time) (Value, bool) {
	el, ok := l.byKey[key]
	if !ok {
		return Value{}, false
	}
	e := el.Value.(*entry)
	if !e.expires.IsZero() && !now.Before(e.expires) {
		return Value{}, false
	}
	return e.val, true
}

// set stores key's value as the most recently used, expiring after ttl
// (0: never), and evicts from the least recently used end until the
// capacity holds. It reports false, storing nothing, when the entry alone
// is larger than the byte capacity.
func (l *lru) set(key string, v Value, ttl time.Duration, now time.Time) bool {
	size := entrySize(key, v)
	if l.maxBytes > 0 && size > l.maxBytes {
		if el, ok := l.byKey[key]; ok {
			l.remove(el) // the old value must not outlive a newer set
		}
		return false
	}
	var exp time.Time
	if ttl > 0 {
		exp = now.Add(ttl)
	}
	if el, ok := l.byKey[key]; ok {
		e := el.Value.(*entry)
		l.bytes += size - e.size
		e.val, e.expires, e.size = v, exp, size
		l.order.MoveToFront(el)
	} else {
		l.byKey[key] = l.order.PushFront(&entry{key: key, val: v, expires: exp, size: size})
		l.bytes += size
	}
	for l.over() {
		back := l.order.Back()
		if back.Value.(*entry).key == key {
			break // cannot happen: the entry fits alone
		}
		l.remove(back)
		l.evictions++
	}
	return true
}

func (l *lru) over() bool {
	return (l.maxEntries > 0 && l.order.Len() > l.maxEntries) || (l.maxBytes > 0 && l.bytes > l.maxBytes)
}

// delete removes key; false when it was absent.
func (l *lru) delete(key string) bool {
	el, ok := l.byKey[key]
	if ok {
		l.remove(el)
	}
	return ok
}

func (l *lru) remove(el *list.Element) {
	e := el.Value.(*entry)
	l.order.Remove(el)
	delete(l.byKey, e.key)
	l.bytes -= e.size
}

// keys lists the keys from most to least recently used (tests).
func (l *lru) keys() []string {
	out := make([]string, 0, l.order.Len())
	for el := l.order.Front(); el != nil; el = el.Next() {
		out = append(out, el.Value.(*entry).key)
	}
	return out
}

func (l *lru) len() int { return l.order.Len() }
