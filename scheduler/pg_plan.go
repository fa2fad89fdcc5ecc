package scheduler

import (
	"cmp"
	"fmt"
	"slices"

	"github.com/goray/goray/internal/sched"
	pb "github.com/goray/goray/proto/goray/v1"
)

// planBundles assigns each bundle to a node (an index into caps) by the
// strategy, fitting bundles into the capacities given (totals, to decide
// feasibility; available resources, to decide what can be reserved now). It
// returns a reason when the bundles do not fit.
func planBundles(strategy pb.PlacementStrategy, bundles, caps []sched.Resources) ([]int, string) {
	if len(caps) == 0 {
		return nil, "no alive node in the cluster"
	}
	switch strategy {
	case pb.PlacementStrategy_PLACEMENT_STRATEGY_STRICT_PACK:
		if plan := strictPack(bundles, caps); plan != nil {
			return plan, ""
		}
		return nil, "STRICT_PACK: no single node can hold every bundle: " + sched.Missing(sched.Sum(bundles...), caps)
	case pb.PlacementStrategy_PLACEMENT_STRATEGY_STRICT_SPREAD:
		if len(bundles) > len(caps) {
			return nil, fmt.Sprintf("STRICT_SPREAD: %d bundles need %d distinct nodes, the cluster has %d alive", len(bundles), len(bundles), len(caps))
		}
		if plan := strictSpread(bundles, caps); plan != nil {
			return plan, ""
		}
		return nil, "STRICT_SPREAD: the bundles do not fit on distinct nodes"
	case pb.PlacementStrategy_PLACEMENT_STRATEGY_PACK:
		if plan := strictPack(bundles, caps); plan != nil {
			return plan, ""
		}
		if plan := firstFit(bundles, caps, false); plan != nil {
			return plan, ""
		}
	default: // SPREAD
		if len(bundles) <= len(caps) {
			if plan := strictSpread(bundles, caps); plan != nil {
				return plan, ""
			}
		}
		if plan := firstFit(bundles, caps, true); plan != nil {
			return plan, ""
		}
	}
	for i, b := range bundles {
		if !slices.ContainsFunc(caps, b.FitsIn) {
			return nil, fmt.Sprintf("bundle %d: %s", i, sched.Missing(b, caps))
		}
	}
	return nil, "the bundles do not fit on the alive nodes together"
}

// strictPack puts every bundle on the fitting node with the most room.
func strictPack(bundles, caps []sched.Resources) []int {
	all := sched.Sum(bundles...)
	best := -1
	for i, c := range caps {
		if all.FitsIn(c) && (best < 0 || room(c) > room(caps[best])) {
			best = i
		}
	}
	if best < 0 {
		return nil
	}
	plan := make([]int, len(bundles))
	for i := range plan {
		plan[i] = best
	}
	return plan
}

// strictSpread puts every bundle on a distinct node, largest bundles first,
// backtracking when a greedy choice strands a later bundle.
func strictSpread(bundles, caps []sched.Resources) []int {
	order := make([]int, len(bundles))
	for i := range order {
		order[i] = i
	}
	slices.SortStableFunc(order, func(a, b int) int { return cmp.Compare(room(bundles[b]), room(bundles[a])) })
	plan := make([]int, len(bundles))
	used := make([]bool, len(caps))
	steps := 0
	var place func(k int) bool
	place = func(k int) bool {
		if k == len(order) {
			return true
		}
		if steps++; steps > 100_000 {
			return false
		}
		b := bundles[order[k]]
		for n, c := range caps {
			if used[n] || !b.FitsIn(c) {
				continue
			}
			used[n], plan[order[k]] = true, n
			if place(k + 1) {
				return true
			}
			used[n] = false
		}
		return false
	}
	if !place(0) {
		return nil
	}
	return plan
}

// firstFit places bundles largest first, each on the node with the most
// room left (spread) or the first node it fits (pack), reusing nodes.
func firstFit(bundles, caps []sched.Resources, spread bool) []int {
	left := make([]sched.Resources, len(caps))
	for i, c := range caps {
		left[i] = c.Clone()
	}
	order := make([]int, len(bundles))
	for i := range order {
		order[i] = i
	}
	slices.SortStableFunc(order, func(a, b int) int { return cmp.Compare(room(bundles[b]), room(bundles[a])) })
	plan := make([]int, len(bundles))
	for _, bi := range order {
		pick := -1
		for n, c := range left {
			if !bundles[bi].FitsIn(c) {
				continue
			}
			if pick < 0 || (spread && room(c) > room(left[pick])) {
				pick = n
				if !spread {
					break
				}
			}
		}
		if pick < 0 {
			return nil
		}
		left[pick].Sub(bundles[bi])
		plan[bi] = pick
	}
	return plan
}

// room is a rough size of a resource set, for ordering.
func room(m sched.Resources) float64 {
	t := 0.0
	for r, v := range m {
		if r == "memory" {
			v /= 1 << 30
		}
		t += v
	}
	return t
}
