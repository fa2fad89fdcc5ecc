package files

import (
	"encoding/binary"
	"fmt"
	"io"
	"sync"

	"google.golang.org/grpc"
	"google.golang.org/grpc/encoding"
	gproto "google.golang.org/grpc/encoding/proto"
	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"

	"github.com/goray/goray/internal/rpc"
	pb "github.com/goray/goray/proto/goray/v1"
)

// The file store's chunk messages (PutFileRequest, PushFileRequest,
// ReadFileResponse) are decoded with one copy of their data instead of
// gRPC's two (gathering the message's frames into one buffer, then
// protobuf copying the bytes field out of it): the data is read from the
// received frames straight into a buffer of its own, and the message's
// other fields (small) are decoded by protobuf. Encoding a chunk does not
// copy its data into a marshalled message either: gRPC's framer copies it
// once onto the wire. On the wire they are ordinary protobuf messages.

var protoCodec = encoding.GetCodecV2(gproto.Name)

// chunkMinData is the size from which a chunk's data is decoded and
// encoded without protobuf's copies.
const chunkMinData = 64 << 10

// dataField is the field number of a chunk message's data; 0 for other
// messages.
func dataField(v any) (protowire.Number, *[]byte) {
	switch m := v.(type) {
	case *pb.PutFileRequest:
		return 2, &m.Data
	case *pb.PushFileRequest:
		return 1, &m.Data
	case *pb.ReadFileResponse:
		return 3, &m.Data
	}
	return 0, nil
}

// UnmarshalChunk decodes data into v: a chunk message with one copy of its
// data, any other message as gRPC's protobuf codec does.
func UnmarshalChunk(data mem.BufferSlice, v any) error {
	num, dst := dataField(v)
	if num == 0 || data.Len() < chunkMinData {
		return protoCodec.Unmarshal(data, v)
	}
	r := data.Reader()
	defer r.Close()
	var rest []byte // every field but the data, re-encoded
	var out []byte
	for r.Remaining() > 0 {
		tag, err := binary.ReadUvarint(r)
		if err != nil {
			return fmt.Errorf("file chunk: %w", err)
		}
		n, typ := protowire.Number(tag>>3), protowire.Type(tag&7)
		switch typ {
		case protowire.VarintType:
			x, err := binary.ReadUvarint(r)
			if err != nil {
				return fmt.Errorf("file chunk: %w", err)
			}
			rest = protowire.AppendTag(rest, n, typ)
			rest = protowire.AppendVarint(rest, x)
		case protowire.Fixed32Type, protowire.Fixed64Type:
			b := make([]byte, 4)
			if typ == protowire.Fixed64Type {
				b = make([]byte, 8)
			}
			if _, err := io.ReadFull(r, b); err != nil {
				return fmt.Errorf("file chunk: %w", err)
			}
			rest = append(protowire.AppendTag(rest, n, typ), b...)
		case protowire.BytesType:
			l, err := binary.ReadUvarint(r)
			if err != nil {
				return fmt.Errorf("file chunk: %w", err)
			}
			if l > uint64(r.Remaining()) {
				return fmt.Errorf("file chunk: a field of %d bytes in the %d left of the message", l, r.Remaining())
			}
			b := make([]byte, l)
			if _, err := io.ReadFull(r, b); err != nil {
				return fmt.Errorf("file chunk: %w", err)
			}
			if n == num {
				out = b // the last one wins, as in protobuf
				continue
			}
			rest = protowire.AppendBytes(protowire.AppendTag(rest, n, typ), b)
		default:
			// Groups: not what goray sends; decode it as protobuf does.
			return protoCodec.Unmarshal(data, v)
		}
	}
	if err := proto.Unmarshal(rest, v.(proto.Message)); err != nil {
		return err
	}
	*dst = out
	return nil
}

// MarshalChunk encodes v: a chunk message's data is not copied (it must
// not change until gRPC wrote it: a message's own buffer, never reused),
// any other message as gRPC's protobuf codec does.
func MarshalChunk(v any) (mem.BufferSlice, error) {
	num, dst := dataField(v)
	if num == 0 || len(*dst) < chunkMinData {
		return protoCodec.Marshal(v)
	}
	m := v.(proto.Message)
	// The other fields, then the data: a decoder takes fields in any order.
	data := *dst
	*dst = nil
	head, err := proto.Marshal(m)
	*dst = data
	if err != nil {
		return nil, err
	}
	head = protowire.AppendTag(head, num, protowire.BytesType)
	head = protowire.AppendVarint(head, uint64(len(data)))
	return mem.BufferSlice{mem.SliceBuffer(head), mem.SliceBuffer(data)}, nil
}

// Codec is the file store's gRPC codec: chunk messages as UnmarshalChunk
// and MarshalChunk say, every other message as protobuf.
type Codec struct{}

// Name is protobuf's: the messages on the wire are protobuf.
func (Codec) Name() string { return gproto.Name }

func (Codec) Marshal(v any) (mem.BufferSlice, error) { return MarshalChunk(v) }

func (Codec) Unmarshal(data mem.BufferSlice, v any) error { return UnmarshalChunk(data, v) }

// putPool holds the buffers of puts' chunks.
var putPool mem.BufferPool = &chunkPool{}

// chunkPool is a pool of putChunk-byte buffers. Unlike gRPC's pools it
// does not clear a buffer it hands out: a put reads its input into it and
// sends only what it read.
type chunkPool struct{ p sync.Pool }

func (c *chunkPool) Get(n int) *[]byte {
	if n <= putChunk {
		if b, ok := c.p.Get().(*[]byte); ok {
			*b = (*b)[:n]
			return b
		}
		b := make([]byte, n, putChunk)
		return &b
	}
	b := make([]byte, n)
	return &b
}

func (c *chunkPool) Put(b *[]byte) {
	if cap(*b) == putChunk {
		c.p.Put(b)
	}
}

// putCodec is a put's codec: the chunk whose buffer is next (from putPool)
// is sent without a copy and its buffer goes back to the pool once gRPC
// wrote it. The one goroutine sending the put sets next before each Send.
type putCodec struct{ next *[]byte }

func (*putCodec) Name() string { return gproto.Name }

func (*putCodec) Unmarshal(data mem.BufferSlice, v any) error { return UnmarshalChunk(data, v) }

func (c *putCodec) Marshal(v any) (mem.BufferSlice, error) {
	m, ok := v.(*pb.PutFileRequest)
	if !ok || c.next == nil || len(m.Data) < chunkMinData || &m.Data[0] != &(*c.next)[0] {
		return MarshalChunk(v)
	}
	data := m.Data
	m.Data = nil
	head, err := proto.Marshal(m)
	m.Data = data
	if err != nil {
		return nil, err
	}
	head = protowire.AppendTag(head, 2, protowire.BytesType)
	head = protowire.AppendVarint(head, uint64(len(data)))
	buf := c.next
	c.next = nil
	*buf = data
	return mem.BufferSlice{mem.SliceBuffer(head), mem.NewBuffer(buf, putPool)}, nil
}

// Bulk connections: the file store's streams to raylets (puts, reads,
// pushes to replicas) get a static 16 MiB flow-control window (gRPC's
// default starts at 64 KiB and grows with its estimate of the
// bandwidth-delay product, which on loopback stays small, so the sender
// waits on the receiver's every few chunks) and 1 MiB socket buffers
// (32 KiB by default: a syscall per two 16 KiB frames).
const (
	bulkWindow = 16 << 20
	bulkBuffer = 1 << 20
)

// dialBulk dials a raylet for the file store's streams.
func dialBulk(addr, token string) (*grpc.ClientConn, error) {
	return rpc.DialWith(addr, token,
		grpc.WithInitialWindowSize(bulkWindow), grpc.WithInitialConnWindowSize(2*bulkWindow),
		grpc.WithWriteBufferSize(bulkBuffer), grpc.WithReadBufferSize(bulkBuffer))
}
