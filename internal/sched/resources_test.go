package sched

import (
	"strings"
	"testing"

	"github.com/goray/goray/internal/ids"
)

func TestFitsIn(t *testing.T) {
	for _, tc := range []struct {
		name       string
		need, have Resources
		want       bool
	}{
		{"empty need", nil, nil, true},
		{"exact", Resources{"CPU": 2}, Resources{"CPU": 2}, true},
		{"too little", Resources{"CPU": 3}, Resources{"CPU": 2}, false},
		{"unknown name", Resources{"tpu": 1}, Resources{"CPU": 8}, false},
		{"zero and negative ask nothing", Resources{"tpu": 0, "gpu": -1}, Resources{}, true},
		{"one of two short", Resources{"CPU": 1, "gpu": 2}, Resources{"CPU": 4, "gpu": 1}, false},
		// 0.1+0.2 is 0.30000000000000004 in floats: rounding must not refuse it.
		{"fractional rounding", Resources{"CPU": 0.1 + 0.2}, Resources{"CPU": 0.3}, true},
		{"fractional short", Resources{"CPU": 0.31}, Resources{"CPU": 0.3}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := tc.need.FitsIn(tc.have); got != tc.want {
				t.Errorf("%v.FitsIn(%v): got %v, want %v", tc.need, tc.have, got, tc.want)
			}
		})
	}
}

func TestAddSub(t *testing.T) {
	r := Resources{"CPU": 1}
	for range 10 {
		r.Sub(Resources{"CPU": 0.1})
	}
	if !(Resources{"CPU": 0}).FitsIn(r) || r["CPU"] > Epsilon || r["CPU"] < -Epsilon {
		t.Errorf("1 CPU minus ten times 0.1: got %v, want 0 within %g", r["CPU"], Epsilon)
	}
	r.Add(Resources{"CPU": 0.5, "gpu": 1})
	if r["CPU"] < 0.5-Epsilon || r["CPU"] > 0.5+Epsilon || r["gpu"] != 1 {
		t.Errorf("after Add: got %v, want {CPU:0.5 gpu:1}", r)
	}

	for _, tc := range []struct {
		name              string
		avail, add, total Resources
		want              Resources
	}{
		{"capped at the total", Resources{"CPU": 1.5}, Resources{"CPU": 1}, Resources{"CPU": 2}, Resources{"CPU": 2}},
		{"under the total", Resources{"CPU": 0.5}, Resources{"CPU": 1}, Resources{"CPU": 2}, Resources{"CPU": 1.5}},
		{"names the total lacks are dropped", Resources{"CPU": 0}, Resources{"CPU": 1, "gone": 1}, Resources{"CPU": 1}, Resources{"CPU": 1}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := tc.avail.Clone()
			got.AddCapped(tc.add, tc.total)
			if got.String() != tc.want.String() {
				t.Errorf("%v.AddCapped(%v, %v): got %v, want %v", tc.avail, tc.add, tc.total, got, tc.want)
			}
		})
	}

	if got := Sum(Resources{"CPU": 1}, nil, Resources{"CPU": 2, "gpu": 1}); got.String() != "{CPU:3 gpu:1}" {
		t.Errorf("Sum: got %v, want {CPU:3 gpu:1}", got)
	}
	if got := (Resources{"b": 1, "a": 0, "c": -1}).Positive(); got.String() != "{b:1}" {
		t.Errorf("Positive: got %v, want {b:1}", got)
	}
}

func TestLacks(t *testing.T) {
	for _, tc := range []struct {
		name       string
		need, have Resources
		want       string // "" when it fits
	}{
		{"fits", Resources{"CPU": 1}, Resources{"CPU": 1}, ""},
		{"first short name in order", Resources{"z": 2, "b": 2, "a": 1}, Resources{"a": 1, "b": 1}, `2 of resource "b" (it has 1)`},
		{"absent", Resources{"gpu": 0.5}, Resources{"CPU": 4}, `0.5 of resource "gpu" (it has 0)`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s, ok := tc.need.Lacks(tc.have)
			got := ""
			if ok {
				got = s.String()
			}
			if got != tc.want {
				t.Errorf("%v.Lacks(%v): got %q, want %q", tc.need, tc.have, got, tc.want)
			}
		})
	}
}

func TestMissing(t *testing.T) {
	two := []Resources{{"CPU": 2, "gpu": 2}, {"CPU": 4}}
	for _, tc := range []struct {
		name   string
		need   Resources
		totals []Resources
		want   string
	}{
		{"no node", Resources{"CPU": 1}, nil, "no alive node in the cluster"},
		{"too much of a resource", Resources{"CPU": 1, "gpu": 3}, two, `no node has resource "gpu" ≥ 3 (the largest has 2)`},
		{"unknown resource", Resources{"tpu": 1}, two, `no node has resource "tpu" ≥ 1 (none has it)`},
		{"no single node", Resources{"CPU": 3, "gpu": 1}, two, "no single node has all of them"},
		{"fractional within rounding is enough", Resources{"CPU": 3, "gpu": 0.1 + 0.2}, []Resources{{"CPU": 2, "gpu": 0.3}}, `no node has resource "CPU" ≥ 3 (the largest has 2)`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := Missing(tc.need, tc.totals); got != tc.want {
				t.Errorf("Missing(%v): got %q, want %q", tc.need, got, tc.want)
			}
		})
	}
}

func TestBundleResourceNames(t *testing.T) {
	pg := ids.NewPlacementGroupID(ids.JobID{1, 2, 3, 4})
	for _, b := range []BundleResource{
		{Resource: "CPU", Group: pg, Index: 0},
		{Resource: "CPU", Group: pg, Index: 12},
		{Resource: "CPU", Group: pg, Index: -1},
		{Resource: "my_group_x", Group: pg, Index: 3},
		{Resource: "memory", Group: pg, Index: -1},
	} {
		t.Run(b.String(), func(t *testing.T) {
			got, ok := ParseBundleResource(b.String())
			if !ok || got != b {
				t.Errorf("ParseBundleResource(%q): got %+v, %v, want %+v, true", b.String(), got, ok, b)
			}
			if !IsBundleResource(b.String()) {
				t.Errorf("IsBundleResource(%q): got false, want true", b.String())
			}
		})
	}
	if got, want := IndexedName("CPU", pg, 2), "CPU_group_2_"+pg.String(); got != want {
		t.Errorf("IndexedName: got %q, want %q", got, want)
	}
	if got, want := WildcardName("CPU", pg), "CPU_group_"+pg.String(); got != want {
		t.Errorf("WildcardName: got %q, want %q", got, want)
	}
	for _, name := range []string{
		"CPU", "my_group_x", "_group_" + pg.String(), "CPU_group_", "CPU_group_zz",
		"CPU_group_" + strings.ToUpper(pg.String()), "CPU_group_-1_" + pg.String(),
		"CPU_group_01_" + pg.String(), "CPU_group_x_" + pg.String(), "CPU_group_" + pg.String()[2:],
	} {
		if b, ok := ParseBundleResource(name); ok {
			t.Errorf("ParseBundleResource(%q): got %+v, true, want not a bundle resource", name, b)
		}
	}
}

func TestCommittedAndInBundle(t *testing.T) {
	pg := ids.NewPlacementGroupID(ids.JobID{1, 2, 3, 4})
	bundle := Resources{"CPU": 2, "none": 0}
	committed := CommittedResources(bundle, pg, 1)
	want := Resources{IndexedName("CPU", pg, 1): 2, WildcardName("CPU", pg): 2}
	if committed.String() != want.String() {
		t.Errorf("CommittedResources: got %v, want %v", committed, want)
	}
	if one := InBundle(Resources{"CPU": 1}, pg, 1); !one.FitsIn(committed) || len(one) != 2 {
		t.Errorf("InBundle(index 1): got %v, want both names, fitting %v", one, committed)
	}
	if anyOne := InBundle(Resources{"CPU": 1}, pg, -1); !anyOne.FitsIn(committed) || len(anyOne) != 1 {
		t.Errorf("InBundle(any): got %v, want the wildcard name only", anyOne)
	}
	if other := InBundle(Resources{"CPU": 1}, pg, 0); other.FitsIn(committed) {
		t.Errorf("InBundle(index 0) %v fits bundle 1's resources %v, want not", other, committed)
	}
}
