package codec

import (
	"reflect"
	"testing"

	pb "github.com/goray/goray/proto/goray/v1"
)

// benchPoint is a small struct value, encoded as MessagePack.
type benchPoint struct {
	X, Y int
	Name string
	Tags []string
}

func BenchmarkEncode(b *testing.B) {
	cases := []struct {
		name string
		v    any
	}{
		{"int", 42},
		{"bytes2", []byte("ok")},
		{"bytes64KiB", make([]byte, 64<<10)},
		{"struct", benchPoint{X: 1, Y: 2, Name: "p", Tags: []string{"a", "b"}}},
		{"proto", &pb.Resources{Amounts: map[string]float64{"CPU": 1}}},
	}
	for _, c := range cases {
		b.Run(c.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if _, err := Encode(c.v); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

func BenchmarkDecode(b *testing.B) {
	cases := []struct {
		name string
		v    any
		t    reflect.Type
	}{
		{"int", 42, reflect.TypeFor[int]()},
		{"bytes2", []byte("ok"), reflect.TypeFor[[]byte]()},
		{"bytes64KiB", make([]byte, 64<<10), reflect.TypeFor[[]byte]()},
		{"struct", benchPoint{X: 1, Y: 2, Name: "p", Tags: []string{"a", "b"}}, reflect.TypeFor[benchPoint]()},
		{"proto", &pb.Resources{Amounts: map[string]float64{"CPU": 1}}, reflect.TypeFor[*pb.Resources]()},
	}
	for _, c := range cases {
		p, err := Encode(c.v)
		if err != nil {
			b.Fatal(err)
		}
		b.Run(c.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if _, err := DecodeTo(p, c.t); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
	b.Run("generic_int", func(b *testing.B) {
		p, _ := Encode(42)
		b.ReportAllocs()
		for b.Loop() {
			if _, err := Decode[int](p); err != nil {
				b.Fatal(err)
			}
		}
	})
}
