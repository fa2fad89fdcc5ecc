package bench

import (
	"slices"
	"testing"
)

func TestPairBaselines(t *testing.T) {
	specs := []*spec{
		{name: "grpc_unary_seq"},
		{name: "etcd_put", adjacent: true},
		{name: "etcd_get", adjacent: true},
		{name: "etcd_unused", adjacent: true},
		{name: "tasks", baseline: "grpc_unary_seq"},
		{name: "kv_put", baseline: "etcd_put"},
		{name: "kv_get", baseline: "etcd_get"},
		{name: "kv_get_again", baseline: "etcd_get"},
	}
	var got []string
	for _, s := range pairBaselines(specs) {
		got = append(got, s.name)
	}
	want := []string{"grpc_unary_seq", "etcd_unused", "tasks", "etcd_put", "kv_put", "etcd_get", "kv_get", "kv_get_again"}
	if !slices.Equal(got, want) {
		t.Fatalf("got %v, want %v", got, want)
	}
}
