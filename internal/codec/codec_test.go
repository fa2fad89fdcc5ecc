package codec

import (
	"bytes"
	"reflect"
	"strings"
	"testing"

	pb "github.com/goray/goray/proto/goray/v1"
)

type point struct {
	X, Y int
	Tag  string
}

func TestRoundTrip(t *testing.T) {
	tests := []struct {
		name string
		in   any
		enc  pb.Encoding
	}{
		{"bytes", []byte{1, 2, 3}, pb.Encoding_ENCODING_RAW},
		{"int", 42, pb.Encoding_ENCODING_MSGPACK},
		{"string", "hello", pb.Encoding_ENCODING_MSGPACK},
		{"struct", point{1, 2, "p"}, pb.Encoding_ENCODING_MSGPACK},
		{"slice", []int{1, 2, 3}, pb.Encoding_ENCODING_MSGPACK},
		{"proto", &pb.Resources{Amounts: map[string]float64{"CPU": 2}}, pb.Encoding_ENCODING_PROTOBUF},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			p, err := Encode(tc.in)
			if err != nil {
				t.Fatalf("Encode: %v", err)
			}
			if p.Encoding != tc.enc {
				t.Fatalf("encoding: got %v, want %v", p.Encoding, tc.enc)
			}
			v, err := DecodeTo(p, reflect.TypeOf(tc.in))
			if err != nil {
				t.Fatalf("DecodeTo: %v", err)
			}
			got := v.Interface()
			if m, ok := tc.in.(*pb.Resources); ok {
				if got.(*pb.Resources).Amounts["CPU"] != m.Amounts["CPU"] {
					t.Fatalf("got %v, want %v", got, tc.in)
				}
				return
			}
			if !reflect.DeepEqual(got, tc.in) {
				t.Fatalf("got %#v, want %#v", got, tc.in)
			}
		})
	}
}

func TestDecodeGeneric(t *testing.T) {
	p, _ := Encode([]byte("abc"))
	b, err := Decode[[]byte](p)
	if err != nil || !bytes.Equal(b, []byte("abc")) {
		t.Fatalf("got %q, %v; want abc", b, err)
	}
	p, _ = Encode(7)
	a, err := Decode[any](p)
	if err != nil {
		t.Fatalf("Decode[any]: %v", err)
	}
	if a != int8(7) && a != int64(7) {
		t.Fatalf("got %#v, want 7", a)
	}
}

func TestWrongTypeIsAnError(t *testing.T) {
	tests := []struct {
		name string
		in   any
		to   reflect.Type
		want string
	}{
		{"string into int", "x", reflect.TypeFor[int](), "cannot decode msgpack value into int"},
		{"raw into int", []byte("x"), reflect.TypeFor[int](), "raw payloads decode only into []byte"},
		{"struct into int", point{}, reflect.TypeFor[int](), "cannot decode msgpack value into int"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			p, _ := Encode(tc.in)
			_, err := DecodeTo(p, tc.to)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %v, want an error containing %q", err, tc.want)
			}
		})
	}
	if _, err := DecodeTo(&pb.Payload{Encoding: 99}, reflect.TypeFor[int]()); err == nil {
		t.Fatal("unknown encoding: got nil error, want one")
	}
	if _, err := DecodeTo(&pb.Payload{Encoding: pb.Encoding_ENCODING_MSGPACK, Data: []byte{0xc1}}, reflect.TypeFor[int]()); err == nil {
		t.Fatal("malformed msgpack: got nil error, want one")
	}
}

func FuzzDecode(f *testing.F) {
	p, _ := Encode(point{1, 2, "x"})
	f.Add(int32(pb.Encoding_ENCODING_MSGPACK), p.Data)
	f.Add(int32(pb.Encoding_ENCODING_JSON), []byte(`{"X":1}`))
	f.Add(int32(pb.Encoding_ENCODING_PROTOBUF), []byte{0x0a, 0x01})
	f.Fuzz(func(t *testing.T, enc int32, data []byte) {
		pl := &pb.Payload{Encoding: pb.Encoding(enc), Data: data}
		_, _ = DecodeTo(pl, reflect.TypeFor[point]())
		_, _ = DecodeTo(pl, reflect.TypeFor[any]())
		_, _ = DecodeTo(pl, reflect.TypeFor[*pb.Resources]())
	})
}
