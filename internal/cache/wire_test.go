package cache

import (
	"context"
	"reflect"
	"testing"

	"github.com/goray/goray/internal/codec"
	pb "github.com/goray/goray/proto/goray/v1"
)

func TestWireRoundTrip(t *testing.T) {
	req := Request{Op: OpCAS, Key: "k", Val: Value{Enc: 3, Data: []byte("v")}, Old: Value{Enc: 1, Data: []byte("o")},
		Absent: true, TTLms: -1, Lease: 1<<53 - 1, LeaseMs: 5, Delta: -7, Fn: "f",
		Config: Config{Name: "c", Shards: 3, MaxEntries: 4, MaxBytes: 5, TTLms: 6}}
	p, err := codec.Encode(req)
	if err != nil {
		t.Fatal(err)
	}
	got, err := codec.Decode[Request](p)
	if err != nil || !reflect.DeepEqual(got, req) {
		t.Fatalf("request round trip: got %+v, %v; want %+v", got, err, req)
	}
	rep := Reply{Code: CodeHit, Val: Value{Enc: 3, Data: []byte("v")}, Lease: 9, Int: -3, Err: "e",
		Stats:  Stats{Hits: 1, Misses: 2, Evictions: 3, Expirations: 4, Entries: 5, Bytes: 6, Computes: 7, Node: "n", Unavailable: 1},
		Config: Config{Name: "c", Shards: 3}}
	p, err = codec.Encode(rep)
	if err != nil {
		t.Fatal(err)
	}
	gotRep, err := codec.Decode[Reply](p)
	if err != nil || !reflect.DeepEqual(gotRep, rep) {
		t.Fatalf("reply round trip: got %+v, %v; want %+v", gotRep, err, rep)
	}
	// A longer array (a newer writer) reads; a shorter one leaves zeros.
	p, _ = codec.Encode([]any{int(OpGet), "key", 0, nil, 0, nil, false, 0, 0, 0, 0, "", "", 0, 0, 0, 0, "extra", 42})
	if got, err := codec.Decode[Request](p); err != nil || got.Op != OpGet || got.Key != "key" {
		t.Fatalf("a longer request: got %+v, %v", got, err)
	}
	p, _ = codec.Encode([]any{int(CodeMiss)})
	if got, err := codec.Decode[Reply](p); err != nil || got.Code != CodeMiss {
		t.Fatalf("a shorter reply: got %+v, %v", got, err)
	}
	for _, bad := range [][]any{{}, {"not an int"}} {
		p, _ = codec.Encode(bad)
		if _, err := codec.Decode[Request](p); err == nil {
			t.Errorf("request %v: decoded, want an error", bad)
		}
	}
}

// BenchmarkShardSide is what a shard does per Get besides the transport:
// decode the request, run it, encode the reply.
func BenchmarkShardSide(b *testing.B) {
	s := NewShard()
	s.Do(context.Background(), Request{Op: OpConfigure, Config: Config{Name: "b", Shards: 1}})
	s.Do(context.Background(), Request{Op: OpSet, Key: "key-1", Val: EncodeInt(1)})
	p, _ := codec.Encode(Request{Op: OpGet, Key: "key-1"})
	b.ReportAllocs()
	for b.Loop() {
		req, err := codec.Decode[Request](p)
		if err != nil {
			b.Fatal(err)
		}
		if _, err := codec.Encode(s.Do(context.Background(), req)); err != nil {
			b.Fatal(err)
		}
	}
}

// FuzzDecode feeds arbitrary bytes to the request and reply decoders: they
// return an error or a value, never panic; a decoded request runs on a
// shard without panicking.
func FuzzDecode(f *testing.F) {
	for _, v := range []any{Request{Op: OpGet, Key: "k"}, Reply{Code: CodeHit, Val: Value{Enc: 3, Data: []byte("x")}}, []any{1, "k"}} {
		p, _ := codec.Encode(v)
		f.Add(p.GetData())
	}
	s := NewShard()
	s.Do(context.Background(), Request{Op: OpConfigure, Config: Config{Name: "f", Shards: 1, MaxEntries: 100, MaxBytes: 1 << 20}})
	f.Fuzz(func(t *testing.T, data []byte) {
		p := &pb.Payload{Encoding: pb.Encoding_ENCODING_MSGPACK, Data: data}
		if req, err := codec.Decode[Request](p); err == nil {
			s.Do(context.Background(), req)
		}
		_, _ = codec.Decode[Reply](p)
	})
}
