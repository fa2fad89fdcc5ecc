package cache

import (
	"fmt"
	"hash/fnv"
	"sort"
)

// VirtualNodes is how many points each shard has on the ring.
const VirtualNodes = 128

// ring maps keys to shards by consistent hashing: each shard owns
// VirtualNodes points on a 64-bit circle, and a key belongs to the shard of
// the first point at or after its hash. Adding a shard moves about 1/n of
// the keys. It is immutable once built.
type ring struct {
	points []uint64
	owner  []int // owner[i] is the shard of points[i]
}

func newRing(shards int) *ring {
	r := &ring{}
	type pt struct {
		h uint64
		s int
	}
	pts := make([]pt, 0, shards*VirtualNodes)
	for s := range shards {
		for v := range VirtualNodes {
			pts = append(pts, pt{hash(fmt.Sprintf("shard-%d#%d", s, v)), s})
		}
	}
	sort.Slice(pts, func(i, j int) bool { return pts[i].h < pts[j].h || (pts[i].h == pts[j].h && pts[i].s < pts[j].s) })
	r.points = make([]uint64, len(pts))
	r.owner = make([]int, len(pts))
	for i, p := range pts {
		r.points[i], r.owner[i] = p.h, p.s
	}
	return r
}

// shard is the shard that owns key.
func (r *ring) shard(key string) int {
	h := hash(key)
	i := sort.Search(len(r.points), func(i int) bool { return r.points[i] >= h })
	if i == len(r.points) {
		i = 0
	}
	return r.owner[i]
}

// hash is FNV-1a finished with a 64-bit mixer (splitmix64's), so that
// similar keys land far apart. It is stable across processes and versions:
// every client of a cache must route a key to the same shard.
func hash(s string) uint64 {
	f := fnv.New64a()
	f.Write([]byte(s))
	x := f.Sum64()
	x ^= x >> 30
	x *= 0xbf58476d1ce4e5b9
	x ^= x >> 27
	x *= 0x94d049bb133111eb
	x ^= x >> 31
	return x
}
