package sched

import (
	"encoding/hex"
	"strconv"
	"strings"

	"github.com/goray/goray/internal/ids"
)

// groupInfix separates a resource's own name from its placement group part
// in a bundle resource name.
const groupInfix = "_group_"

// BundleResource is the renamed resource a committed placement group bundle
// adds to its node (Ray's scheme): "<Resource>_group_<Index>_<Group>" for
// bundle Index's share, "<Resource>_group_<Group>" (Index < 0) for any
// bundle of the group on the node. Its names are formatted by String and
// read by ParseBundleResource, nowhere else.
type BundleResource struct {
	// Resource is the name the bundle asked for, e.g. "CPU".
	Resource string
	// Group is the placement group.
	Group ids.PlacementGroupID
	// Index is the bundle's index, or -1 for the group's wildcard name.
	Index int
}

// String is the resource name.
func (b BundleResource) String() string {
	if b.Index < 0 {
		return b.Resource + groupInfix + b.Group.String()
	}
	return b.Resource + groupInfix + strconv.Itoa(b.Index) + "_" + b.Group.String()
}

// Wildcard reports whether b names any bundle of its group.
func (b BundleResource) Wildcard() bool { return b.Index < 0 }

// ParseBundleResource reads a name made by BundleResource.String; ok is
// false for any other name (an ordinary resource, even one whose own name
// contains "_group_").
func ParseBundleResource(name string) (b BundleResource, ok bool) {
	i := strings.LastIndex(name, groupInfix)
	if i <= 0 {
		return BundleResource{}, false
	}
	b.Resource, b.Index = name[:i], -1
	rest := name[i+len(groupInfix):]
	if j := strings.IndexByte(rest, '_'); j >= 0 {
		idx, err := strconv.Atoi(rest[:j])
		if err != nil || idx < 0 || rest[:j] != strconv.Itoa(idx) {
			return BundleResource{}, false
		}
		b.Index, rest = idx, rest[j+1:]
	}
	raw, err := hex.DecodeString(rest)
	if err != nil || len(raw) != ids.PlacementGroupIDSize || hex.EncodeToString(raw) != rest {
		return BundleResource{}, false
	}
	copy(b.Group[:], raw)
	return b, true
}

// IsBundleResource reports whether name is a BundleResource's name.
func IsBundleResource(name string) bool {
	_, ok := ParseBundleResource(name)
	return ok
}

// IndexedName is the resource name of bundle index's share of r.
func IndexedName(r string, pg ids.PlacementGroupID, index int) string {
	return BundleResource{Resource: r, Group: pg, Index: index}.String()
}

// WildcardName is the resource name of r in any bundle of pg on a node.
func WildcardName(r string, pg ids.PlacementGroupID) string {
	return BundleResource{Resource: r, Group: pg, Index: -1}.String()
}

// CommittedResources are the resources committing bundle index of pg adds
// to its node: each positive amount under both its indexed and its wildcard
// name.
func CommittedResources(bundle Resources, pg ids.PlacementGroupID, index int) Resources {
	out := make(Resources, 2*len(bundle))
	for r, v := range bundle {
		if v <= 0 {
			continue
		}
		out[IndexedName(r, pg, index)] += v
		out[WildcardName(r, pg)] += v
	}
	return out
}

// InBundle renames a request so it is placed in bundle index of pg, or in
// any of its bundles when index < 0.
func InBundle(need Resources, pg ids.PlacementGroupID, index int) Resources {
	out := make(Resources, 2*len(need))
	for r, v := range need {
		if v <= 0 {
			continue
		}
		out[WildcardName(r, pg)] += v
		if index >= 0 {
			out[IndexedName(r, pg, index)] += v
		}
	}
	return out
}
