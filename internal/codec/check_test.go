package codec

import (
	"bytes"
	"math"
	"runtime"
	"strings"
	"testing"

	"github.com/vmihailenco/msgpack/v5"

	pb "github.com/goray/goray/proto/goray/v1"
)

func TestCheckMsgpack(t *testing.T) {
	good, err := msgpack.Marshal(map[string]any{"a": []any{1, -2, 3.5, "x", nil, true, []byte{1, 2}}, "b": map[string]int{"c": 1 << 40}})
	if err != nil {
		t.Fatal(err)
	}
	deep := func(n int) []byte { return append(bytes.Repeat([]byte{0x91}, n), 0xc0) }
	tests := []struct {
		name string
		data []byte
		want string // "" for ok, else a part of the error
	}{
		{"nested values", good, ""},
		{"nil", []byte{0xc0}, ""},
		{"empty array and map", []byte{0x92, 0x90, 0x80}, ""},
		{"fixext 16", append([]byte{0xd8, 0x01}, make([]byte, 16)...), ""},
		{"ext8", []byte{0xc7, 0x02, 0x47, 0xaa, 0xbb}, ""},
		{"array32 of one", []byte{0xdd, 0, 0, 0, 1, 0x01}, ""},
		{"map16 of one", []byte{0xde, 0, 1, 0xa1, 'k', 0x02}, ""},
		{"at the depth limit", deep(MaxDepth), ""},
		{"empty", nil, "ends early"},
		{"invalid code", []byte{0xc1}, "invalid code 0xc1"},
		{"bin32 claiming 1 GiB", []byte{0xc6, 0x40, 0, 0, 0, 0x61}, "declares 1073741824 bytes, only 1 follow"},
		{"bin32 claiming 4 GiB", []byte{0xc6, 0xff, 0xff, 0xff, 0xff}, "declares 4294967295 bytes"},
		{"str32 claiming more", []byte{0xdb, 0, 0, 1, 0, 'x'}, "declares 256 bytes"},
		{"ext32 claiming more", []byte{0xc9, 0, 0, 0x10, 0, 0x47}, "declares 4097 bytes"},
		{"array32 claiming 4 G values", []byte{0xdd, 0xff, 0xff, 0xff, 0xff, 0xc0}, "declares 4294967295 values, only 1 bytes follow"},
		{"map32 claiming 2 G pairs", []byte{0xdf, 0x7f, 0xff, 0xff, 0xff, 0xc0, 0xc0}, "declares 4294967294 values"},
		{"cut header", []byte{0xdd, 0, 0}, "cut short"},
		{"cut float", []byte{0xcb, 1, 2}, "declares 8 bytes"},
		{"truncated array", []byte{0x92, 0x01}, "declares 2 values, only 1 bytes follow"},
		{"array cut after a string", []byte{0x92, 0xa1, 'x'}, "ends early"},
		{"two values", []byte{0x01, 0x02}, "1 bytes follow the value"},
		{"past the depth limit", deep(MaxDepth + 1), "nest more than 1000 deep"},
		{"millions deep", deep(6 << 20), "nest more than 1000 deep"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := CheckMsgpack(tt.data, MaxDepth)
			switch {
			case tt.want == "" && err != nil:
				t.Fatalf("got %v, want ok", err)
			case tt.want != "" && (err == nil || !strings.Contains(err.Error(), tt.want)):
				t.Fatalf("got %v, want an error saying %q", err, tt.want)
			}
		})
	}
}

// Decoding hostile MessagePack allocates what the bytes hold, not what a
// header claims: a 6-byte value claiming 1 GiB is refused at once.
func TestDecodeRefusesClaimedSizes(t *testing.T) {
	for _, data := range [][]byte{{0xc6, 0x40, 0, 0, 0, 0x61}, {0xdd, 0xff, 0xff, 0xff, 0xff, 0xc0}, append(bytes.Repeat([]byte{0x91}, 5<<20), 0xc0)} {
		p := &pb.Payload{Encoding: pb.Encoding_ENCODING_MSGPACK, Data: data}
		var before, after runtime.MemStats
		runtime.ReadMemStats(&before)
		_, err := Decode[any](p)
		runtime.ReadMemStats(&after)
		if err == nil {
			t.Fatalf("decode of % x...: got nil, want an error", data[:min(8, len(data))])
		}
		if grew := int64(after.TotalAlloc - before.TotalAlloc); grew > 64<<20 {
			t.Errorf("decode of % x...: allocated %d bytes, want at most in proportion to its %d", data[:min(8, len(data))], grew, len(data))
		}
	}
}

// CheckMsgpack agrees with the decoder's own Skip on what is one complete
// value (within the depth limit).
func FuzzCheckMsgpack(f *testing.F) {
	for _, s := range [][]byte{{0xc0}, {0x92, 0x01, 0xa1, 'x'}, {0xc6, 0x40, 0, 0, 0, 0x61}, {0xde, 0, 1, 0xa1, 'k', 0x02}, {0xd8, 1}, {0x91, 0x91, 0x90}} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		err := CheckMsgpack(data, MaxDepth)
		r := bytes.NewReader(data)
		skipErr := msgpack.NewDecoder(r).Skip()
		complete := skipErr == nil && r.Len() == 0
		if err == nil && !complete {
			t.Fatalf("CheckMsgpack accepted % x, which Skip refuses (%v, %d left)", data, skipErr, r.Len())
		}
		if err != nil && complete && !strings.Contains(err.Error(), "nest more than") {
			t.Fatalf("CheckMsgpack refused % x (%v), which Skip reads whole", data, err)
		}
	})
}

func BenchmarkCheckMsgpack(b *testing.B) {
	small, _ := msgpack.Marshal([]any{int64(7), "abc"})
	big, _ := msgpack.Marshal(map[string]any{"xs": make([]int, 10000), "s": strings.Repeat("x", 1000)})
	for _, c := range []struct {
		name string
		data []byte
	}{{"small", small}, {"10k ints", big}} {
		b.Run(c.name, func(b *testing.B) {
			b.ReportAllocs()
			b.SetBytes(int64(len(c.data)))
			for b.Loop() {
				if err := CheckMsgpack(c.data, MaxDepth); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// A value that a scalar type cannot hold is refused, not wrapped or zeroed
// (issue 14: add(2**63) came back negative, square(None) as 0).
func TestDecodeScalarsStrictly(t *testing.T) {
	mp := func(v any) *pb.Payload {
		b, err := msgpack.Marshal(v)
		if err != nil {
			t.Fatal(err)
		}
		return &pb.Payload{Encoding: pb.Encoding_ENCODING_MSGPACK, Data: b}
	}
	refuse := func(name string, err error, want string) {
		t.Helper()
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%s: got %v, want an error saying %q", name, err, want)
		}
	}
	accept := func(name string, err error) {
		t.Helper()
		if err != nil {
			t.Errorf("%s: got %v, want it decoded", name, err)
		}
	}
	_, err := Decode[int64](mp(uint64(1 << 63)))
	refuse("2^63 into int64", err, "9223372036854775808 does not fit in int64")
	_, err = Decode[int64](mp(nil))
	refuse("nil into int64", err, "want an integer for int64, got nil")
	_, err = Decode[string](mp(nil))
	refuse("nil into string", err, "want a string")
	_, err = Decode[bool](mp(1))
	refuse("1 into bool", err, "want a bool")
	_, err = Decode[uint8](mp(300))
	refuse("300 into uint8", err, "300 does not fit in uint8")
	_, err = Decode[uint](mp(-1))
	refuse("-1 into uint", err, "want a non-negative integer for uint, got -1")
	_, err = Decode[int8](mp(-129))
	refuse("-129 into int8", err, "-129 does not fit in int8")
	_, err = Decode[int](mp("seven"))
	refuse("a string into int", err, "want an integer for int, got string")
	_, err = Decode[float64](mp([]int{1}))
	refuse("an array into float64", err, "want a number for float64, got an array")

	v, err := Decode[int64](mp(int64(math.MinInt64)))
	accept("MinInt64 into int64", err)
	if v != math.MinInt64 {
		t.Errorf("MinInt64: got %d", v)
	}
	_, err = Decode[int8](mp(-128))
	accept("-128 into int8", err)
	u, err := Decode[uint64](mp(uint64(math.MaxUint64)))
	accept("MaxUint64 into uint64", err)
	if u != math.MaxUint64 {
		t.Errorf("MaxUint64: got %d", u)
	}
	f, err := Decode[float64](mp(3))
	accept("an integer into float64", err)
	if f != 3 {
		t.Errorf("3 into float64: got %v", f)
	}
	_, err = Decode[string](mp([]byte("bytes")))
	accept("binary into string", err)
	p, err := Decode[*int](mp(nil))
	accept("nil into *int", err)
	if p != nil {
		t.Errorf("nil into *int: got %v", p)
	}
	_, err = Decode[any](mp(nil))
	accept("nil into any", err)
}
