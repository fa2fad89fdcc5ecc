package gateway

import (
	"context"
	"errors"
	"testing"

	"github.com/goray/goray/internal/errs"
	pb "github.com/goray/goray/proto/goray/v1"
	"github.com/vmihailenco/msgpack/v5"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

func TestCheckPayload(t *testing.T) {
	mp, _ := msgpack.Marshal(map[string]any{"a": []int{1, 2}})
	tests := []struct {
		name string
		p    *pb.Payload
		ok   bool
	}{
		{"raw", &pb.Payload{Encoding: pb.Encoding_ENCODING_RAW, Data: []byte{0, 1}}, true},
		{"msgpack", &pb.Payload{Encoding: pb.Encoding_ENCODING_MSGPACK, Data: mp}, true},
		{"json", &pb.Payload{Encoding: pb.Encoding_ENCODING_JSON, Data: []byte(`{"a":1}`)}, true},
		{"protobuf", &pb.Payload{Encoding: pb.Encoding_ENCODING_PROTOBUF, Data: []byte{0x0a, 0x01, 'x'}, TypeUrl: "type.googleapis.com/goray.v1.ClientRef"}, true},
		{"empty protobuf", &pb.Payload{Encoding: pb.Encoding_ENCODING_PROTOBUF, TypeUrl: "type.googleapis.com/goray.v1.ClientRef"}, true},
		{"nil", nil, false},
		{"unspecified", &pb.Payload{Data: []byte("x")}, false},
		{"unknown encoding", &pb.Payload{Encoding: 99}, false},
		{"bad msgpack", &pb.Payload{Encoding: pb.Encoding_ENCODING_MSGPACK, Data: []byte{0xc1}}, false},
		{"truncated msgpack", &pb.Payload{Encoding: pb.Encoding_ENCODING_MSGPACK, Data: []byte{0x92, 0x01}}, false},
		{"two msgpack values", &pb.Payload{Encoding: pb.Encoding_ENCODING_MSGPACK, Data: []byte{0x01, 0x02}}, false},
		{"bad json", &pb.Payload{Encoding: pb.Encoding_ENCODING_JSON, Data: []byte(`{nope`)}, false},
		{"protobuf without type", &pb.Payload{Encoding: pb.Encoding_ENCODING_PROTOBUF, Data: []byte{0x08, 0x01}}, false},
		{"bad protobuf", &pb.Payload{Encoding: pb.Encoding_ENCODING_PROTOBUF, Data: []byte{0x0a, 0x05}, TypeUrl: "type.googleapis.com/x.Y"}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := checkPayload(tt.p)
			if got := err == nil; got != tt.ok {
				t.Fatalf("checkPayload: got err %v, want ok=%v", err, tt.ok)
			}
			if err != nil && !errors.Is(err, errs.ErrInvalidArgument) {
				t.Fatalf("got %v, want an invalid-argument error", err)
			}
		})
	}
}

func FuzzCheckPayload(f *testing.F) {
	f.Add(int32(3), []byte{0x92, 0x01, 0x02})
	f.Add(int32(2), []byte{0x0a, 0x01, 'x'})
	f.Add(int32(4), []byte(`[1,{"a":null}]`))
	f.Fuzz(func(t *testing.T, enc int32, data []byte) {
		_ = checkPayload(&pb.Payload{Encoding: pb.Encoding(enc), Data: data, TypeUrl: "type.googleapis.com/x.Y"})
	})
}

func TestHandshakeVersion(t *testing.T) {
	g, err := New(Config{HeadAddress: "127.0.0.1:1"})
	if err != nil {
		t.Fatal(err)
	}
	defer g.Close()
	for _, tt := range []struct {
		version uint32
		want    codes.Code
	}{{0, codes.InvalidArgument}, {ProtocolVersion + 1, codes.FailedPrecondition}} {
		_, err := g.Handshake(context.Background(), &pb.HandshakeRequest{ProtocolVersion: tt.version})
		if got := status.Code(err); got != tt.want {
			t.Errorf("Handshake(version %d): got %v (%v), want %v", tt.version, got, err, tt.want)
		}
	}
}

func TestNamespaceRequired(t *testing.T) {
	g, err := New(Config{HeadAddress: "127.0.0.1:1"})
	if err != nil {
		t.Fatal(err)
	}
	defer g.Close()
	_, err = g.CallFunction(context.Background(), &pb.CallFunctionRequest{Function: "f"})
	if got := status.Code(err); got != codes.InvalidArgument {
		t.Fatalf("CallFunction without a namespace: got %v (%v), want InvalidArgument", got, err)
	}
}
