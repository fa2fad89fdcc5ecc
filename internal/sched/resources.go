package sched

import (
	"fmt"
	"maps"
	"slices"
	"strings"
)

// Epsilon absorbs float rounding when fractional amounts (0.1 CPU, …) are
// added and taken: an amount within Epsilon of what is needed is enough.
const Epsilon = 1e-9

// Resources is a set of logical resource amounts by name ("CPU", "memory",
// "GPU", custom names, and the renamed resources of placement group
// bundles). A nil set is empty; an amount ≤ 0 asks for nothing. It is the one
// representation of resources in the head, the raylets and the policies of
// this package. A Resources is not safe for concurrent use; its owner's lock
// guards it.
type Resources map[string]float64

// Clone returns a copy of r (nil stays nil).
func (r Resources) Clone() Resources { return maps.Clone(r) }

// Positive returns a copy of r without the amounts ≤ 0.
func (r Resources) Positive() Resources {
	out := make(Resources, len(r))
	for k, v := range r {
		if v > 0 {
			out[k] = v
		}
	}
	return out
}

// Names returns r's resource names, sorted.
func (r Resources) Names() []string { return slices.Sorted(maps.Keys(r)) }

// FitsIn reports whether every positive amount of r is within have's.
func (r Resources) FitsIn(have Resources) bool {
	for k, v := range r {
		if v > 0 && have[k]+Epsilon < v {
			return false
		}
	}
	return true
}

// Add adds o to r.
func (r Resources) Add(o Resources) {
	for k, v := range o {
		r[k] += v
	}
}

// Sub takes o from r. Amounts may go below zero; callers that took only
// what fit (FitsIn) stay at zero or above, up to rounding.
func (r Resources) Sub(o Resources) {
	for k, v := range o {
		r[k] -= v
	}
}

// AddCapped adds o to r, each amount capped at total's so rounding never
// grows a node past its total. Names total does not have (a returned
// placement group bundle's) are dropped, so they never come back.
func (r Resources) AddCapped(o, total Resources) {
	for k, v := range o {
		t, ok := total[k]
		if !ok {
			continue
		}
		r[k] = min(r[k]+v, t)
	}
}

// String formats r with its names sorted, as {CPU:1 gpu:0.5}.
func (r Resources) String() string {
	var b strings.Builder
	b.WriteByte('{')
	for i, k := range r.Names() {
		if i > 0 {
			b.WriteByte(' ')
		}
		fmt.Fprintf(&b, "%s:%g", k, r[k])
	}
	b.WriteByte('}')
	return b.String()
}

// Sum adds sets into a new set.
func Sum(sets ...Resources) Resources {
	out := Resources{}
	for _, s := range sets {
		out.Add(s)
	}
	return out
}

// Shortfall is one resource a set lacks: Need of Name was asked for, Have
// is there.
type Shortfall struct {
	Name string
	Need float64
	Have float64
}

// String says, for one node, what it lacks: `2 of resource "GPU" (it has 1)`.
func (s Shortfall) String() string {
	return fmt.Sprintf("%g of resource %q (it has %g)", s.Need, s.Name, s.Have)
}

// Lacks returns the first resource, in name order, of which have holds less
// than r asks for; ok is false when r fits in have.
func (r Resources) Lacks(have Resources) (s Shortfall, ok bool) {
	for _, k := range r.Names() {
		if v := r[k]; v > 0 && have[k]+Epsilon < v {
			return Shortfall{Name: k, Need: v, Have: have[k]}, true
		}
	}
	return Shortfall{}, false
}

// Missing explains, in words, why need fits none of totals (the totals of
// the alive nodes): no alive node at all, the first resource no node has
// enough of, or that no single node has all of it. It is the one
// explanation of infeasible work that the head and the raylets give.
func Missing(need Resources, totals []Resources) string {
	if len(totals) == 0 {
		return "no alive node in the cluster"
	}
	most := Resources{}
	for _, t := range totals {
		for k, v := range t {
			most[k] = max(most[k], v)
		}
	}
	s, ok := need.Lacks(most)
	switch {
	case !ok:
		return "no single node has all of them"
	case s.Have <= 0:
		return fmt.Sprintf("no node has resource %q ≥ %g (none has it)", s.Name, s.Need)
	default:
		return fmt.Sprintf("no node has resource %q ≥ %g (the largest has %g)", s.Name, s.Need, s.Have)
	}
}
