package core

import (
	"fmt"
	"testing"
)

// TestDefaultShapeKey: the default shape's key, a constant so that it is not
// built for every task, is what shapeKey builds for other shapes.
func TestDefaultShapeKey(t *testing.T) {
	if want := fmt.Sprintf("%s=%g;", "CPU", 1.0); defaultShapeKey != want {
		t.Fatalf("defaultShapeKey = %q, want %q", defaultShapeKey, want)
	}
	for _, c := range []struct {
		r    map[string]float64
		want string
	}{
		{defaultTaskResources, defaultShapeKey},
		{map[string]float64{"CPU": 1}, defaultShapeKey},
		{map[string]float64{"CPU": 2}, "CPU=2;"},
		{map[string]float64{"CPU": 1, "GPU": 0}, "CPU=1;GPU=0;"},
		{map[string]float64{"GPU": 1}, "GPU=1;"},
	} {
		if got := shapeKey(c.r); got != c.want {
			t.Errorf("shapeKey(%v) = %q, want %q", c.r, got, c.want)
		}
	}
}
