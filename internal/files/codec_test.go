package files

import (
	"bytes"
	"testing"

	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/proto"

	pb "github.com/goray/goray/proto/goray/v1"
)

// split cuts b into gRPC buffers of at most 16 KiB, as HTTP/2 frames do.
func split(b []byte) mem.BufferSlice {
	var s mem.BufferSlice
	for len(b) > 0 {
		n := min(len(b), 16<<10)
		s = append(s, mem.SliceBuffer(bytes.Clone(b[:n])))
		b = b[n:]
	}
	return s
}

func TestChunkCodec(t *testing.T) {
	big := bytes.Repeat([]byte("abcdefghij"), 100_001)
	info := &pb.FileInfo{Sha256: bytes.Repeat([]byte{7}, 32), Size: 12345, BlockSize: BlockSize, BlockCrc32C: []uint32{1, 2, 3},
		Replicas: []*pb.FileReplica{{NodeId: []byte("n"), Address: "a:1"}}}
	msgs := []proto.Message{
		&pb.PutFileRequest{Header: &pb.PutFileHeader{Replicas: 3, Name: "x/y"}, Data: big},
		&pb.PutFileRequest{Data: big},
		&pb.PutFileRequest{Data: big[:100]}, // small: protobuf's way
		&pb.PutFileRequest{Header: &pb.PutFileHeader{Replicas: 1}},
		&pb.PushFileRequest{Data: big},
		&pb.PushFileRequest{Data: big, Info: info},
		&pb.PushFileRequest{Info: info},
		&pb.ReadFileResponse{Size: 1 << 40, Offset: 3 << 20, Data: big},
		&pb.ReadFileResponse{Size: 0, Offset: 0},
		info, // not a chunk
	}
	for i, m := range msgs {
		// Ours to protobuf's and protobuf's to ours.
		enc, err := MarshalChunk(m)
		if err != nil {
			t.Fatalf("%d: MarshalChunk: %v", i, err)
		}
		got := m.ProtoReflect().New().Interface()
		if err := proto.Unmarshal(enc.Materialize(), got); err != nil || !proto.Equal(got, m) {
			t.Fatalf("%d: MarshalChunk's bytes decode to %v (%v), want %v", i, got, err, m)
		}
		std, _ := proto.Marshal(m)
		got = m.ProtoReflect().New().Interface()
		if err := UnmarshalChunk(split(std), got); err != nil || !proto.Equal(got, m) {
			t.Fatalf("%d: UnmarshalChunk of protobuf's bytes: got %v (%v), want %v", i, got, err, m)
		}
	}
	// A truncated message is an error, not a short chunk.
	std, _ := proto.Marshal(&pb.PutFileRequest{Data: big})
	if err := UnmarshalChunk(split(std[:len(std)-10]), &pb.PutFileRequest{}); err == nil {
		t.Fatal("UnmarshalChunk of a truncated message: got no error")
	}
}
