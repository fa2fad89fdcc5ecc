// Package sched holds the scheduling rules the head (actors, placement
// groups) and the raylets (task leases) share: the resource set (Resources:
// fits, add, subtract, what is missing and why), how a placement group's
// bundles show up as resources (BundleResource), node utilisation, and the
// node pick of each strategy.
//
// Bundles as resources (Ray's scheme): committing bundle i of group g on a
// node takes the bundle's resources from the node and adds, for each
// resource r, "r_group_<i>_<g>" (this bundle) and "r_group_<g>" (any bundle of
// g on the node). Work placed in bundle i asks for both names; work placed in
// "any bundle" asks for the second. The ordinary feasibility and placement
// code then does the rest.
package sched

import (
	"cmp"
	"math"
	"math/rand/v2"
	"slices"
	"strings"
)

// SpreadThreshold is the utilisation under which nodes count as equally
// good, and under which the local node is preferred (Ray's default 0.5).
const SpreadThreshold = 0.5

// TopKFraction of the best nodes are picked from at random past the
// threshold (Ray's default 0.2), so that simultaneous requests spread.
const TopKFraction = 0.2

// Utilization is the node's most used resource, as a fraction: the largest
// (total-available)/total over its resources (bundle resources excluded, as
// the resources they came from already count as used).
func Utilization(total, avail Resources) float64 {
	u := 0.0
	for r, t := range total {
		if t <= 0 || IsBundleResource(r) {
			continue
		}
		u = max(u, (t-avail[r])/t)
	}
	return math.Max(0, math.Min(1, u))
}

// Node is a candidate node for a pick.
type Node struct {
	ID        []byte
	Total     Resources
	Available Resources
	// Local is the node the request came from.
	Local bool
	// Load breaks ties: e.g. actors already placed there.
	Load int
}

// PickHybrid is Ray's default policy. Among nodes whose available resources
// fit need: the local node while its utilisation is under the threshold;
// otherwise one of the best TopKFraction nodes by utilisation (those under
// the threshold counting as equal, then by Load) at random. When none fits
// now, it returns the least-utilised feasible node with now=false (queue
// there). It returns -1 when no node is feasible.
func PickHybrid(nodes []Node, need Resources, rng *rand.Rand) (pick int, now bool) {
	var fitting, feasible []int
	for i, n := range nodes {
		if !need.FitsIn(n.Total) {
			continue
		}
		feasible = append(feasible, i)
		if need.FitsIn(n.Available) {
			fitting = append(fitting, i)
		}
	}
	if len(feasible) == 0 {
		return -1, false
	}
	if len(fitting) == 0 {
		return best(nodes, feasible), false
	}
	for _, i := range fitting {
		if nodes[i].Local && Utilization(nodes[i].Total, nodes[i].Available) < SpreadThreshold {
			return i, true
		}
	}
	ranked := rank(nodes, fitting)
	k := max(1, int(math.Ceil(TopKFraction*float64(len(ranked)))))
	// Only nodes as good as the best are worth a random pick.
	top := ranked[:1]
	for _, i := range ranked[1:k] {
		if score(nodes[i]) == score(nodes[ranked[0]]) && nodes[i].Load == nodes[ranked[0]].Load {
			top = append(top, i)
		}
	}
	if rng == nil || len(top) == 1 {
		return top[0], true
	}
	return top[rng.IntN(len(top))], true
}

// PickSpread spreads: the fitting node with the least Load, then the least
// utilisation (rotating by seq among equals); when none fits now, the
// least-loaded feasible node with now=false. -1 when none is feasible.
func PickSpread(nodes []Node, need Resources, seq uint64) (pick int, now bool) {
	var fitting, feasible []int
	for i, n := range nodes {
		if !need.FitsIn(n.Total) {
			continue
		}
		feasible = append(feasible, i)
		if need.FitsIn(n.Available) {
			fitting = append(fitting, i)
		}
	}
	if len(feasible) == 0 {
		return -1, false
	}
	set, now := fitting, true
	if len(set) == 0 {
		set, now = feasible, false
	}
	slices.SortFunc(set, func(a, b int) int {
		return cmp.Or(cmp.Compare(nodes[a].Load, nodes[b].Load),
			cmp.Compare(Utilization(nodes[a].Total, nodes[a].Available), Utilization(nodes[b].Total, nodes[b].Available)),
			strings.Compare(string(nodes[a].ID), string(nodes[b].ID)))
	})
	tied := 1
	for tied < len(set) && nodes[set[tied]].Load == nodes[set[0]].Load &&
		Utilization(nodes[set[tied]].Total, nodes[set[tied]].Available) == Utilization(nodes[set[0]].Total, nodes[set[0]].Available) {
		tied++
	}
	return set[int(seq%uint64(tied))], now
}

func score(n Node) float64 {
	u := Utilization(n.Total, n.Available)
	if u < SpreadThreshold {
		return 0
	}
	return u
}

func rank(nodes []Node, idx []int) []int {
	out := slices.Clone(idx)
	slices.SortStableFunc(out, func(a, b int) int {
		return cmp.Or(cmp.Compare(score(nodes[a]), score(nodes[b])),
			cmp.Compare(nodes[a].Load, nodes[b].Load),
			cmp.Compare(nodes[b].Available["CPU"], nodes[a].Available["CPU"]),
			strings.Compare(string(nodes[a].ID), string(nodes[b].ID)))
	})
	return out
}

func best(nodes []Node, idx []int) int { return rank(nodes, idx)[0] }
