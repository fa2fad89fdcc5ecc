package raylet

import (
	"encoding/binary"
	"fmt"
	"io"

	"google.golang.org/grpc/encoding"
	"google.golang.org/grpc/encoding/proto"
	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/encoding/protowire"

	"github.com/goray/goray/internal/files"
	pb "github.com/goray/goray/proto/goray/v1"
)

// Object transfers move chunks of raw bytes without protobuf's copies: the
// holder sends a chunk straight from the object's memory (a PullResponse's
// data is not copied into a marshalled message; gRPC's framer copies it once
// onto the wire), and the puller decodes the chunk's data straight into its
// arena region. On the wire they are ordinary PullResponse messages.

// protoCodec is gRPC's own codec, for every other message.
var protoCodec = encoding.GetCodecV2(proto.Name)

// transferServerCodec is the raylet server's codec: PullResponse messages
// are marshalled without copying their data, and the file store's chunks
// as files.Codec does.
type transferServerCodec struct{}

func (transferServerCodec) Name() string { return proto.Name }

func (transferServerCodec) Unmarshal(data mem.BufferSlice, v any) error {
	return files.UnmarshalChunk(data, v)
}

func (transferServerCodec) Marshal(v any) (mem.BufferSlice, error) {
	m, ok := v.(*pb.PullResponse)
	if !ok || len(m.GetData()) < 64<<10 {
		return files.MarshalChunk(v)
	}
	// Fields in number order, as proto.Marshal writes them; zero scalars
	// are left out, as proto3 does.
	hdr := make([]byte, 0, 32)
	if m.TotalSize != 0 {
		hdr = protowire.AppendTag(hdr, 1, protowire.VarintType)
		hdr = protowire.AppendVarint(hdr, m.TotalSize)
	}
	if m.Offset != 0 {
		hdr = protowire.AppendTag(hdr, 2, protowire.VarintType)
		hdr = protowire.AppendVarint(hdr, m.Offset)
	}
	hdr = protowire.AppendTag(hdr, 3, protowire.BytesType)
	hdr = protowire.AppendVarint(hdr, uint64(len(m.Data)))
	return mem.BufferSlice{mem.SliceBuffer(hdr), mem.SliceBuffer(m.Data)}, nil
}

// pullCodec is a pull's codec into an arena region: a PullResponse's data
// is written into the region at its offset and Data is then that part of
// the region (no buffer of its own).
type pullCodec struct{ region []byte }

func (pullCodec) Name() string { return proto.Name }

func (pullCodec) Marshal(v any) (mem.BufferSlice, error) { return protoCodec.Marshal(v) }

func (c pullCodec) Unmarshal(data mem.BufferSlice, v any) error {
	m, ok := v.(*pb.PullResponse)
	if !ok {
		return protoCodec.Unmarshal(data, v)
	}
	m.Reset()
	r := data.Reader()
	defer r.Close()
	sawData := false
	for r.Remaining() > 0 {
		tag, err := binary.ReadUvarint(r)
		if err != nil {
			return fmt.Errorf("pull chunk: %w", err)
		}
		num, typ := protowire.Number(tag>>3), protowire.Type(tag&7)
		switch {
		case sawData:
			return c.slow(data, m) // fields after the data: not our layout
		case num == 1 && typ == protowire.VarintType:
			if m.TotalSize, err = binary.ReadUvarint(r); err != nil {
				return fmt.Errorf("pull chunk: %w", err)
			}
		case num == 2 && typ == protowire.VarintType:
			if m.Offset, err = binary.ReadUvarint(r); err != nil {
				return fmt.Errorf("pull chunk: %w", err)
			}
		case num == 3 && typ == protowire.BytesType:
			n, err := binary.ReadUvarint(r)
			if err != nil {
				return fmt.Errorf("pull chunk: %w", err)
			}
			if n > uint64(r.Remaining()) {
				return fmt.Errorf("pull chunk: %d bytes of data, %d in the message", n, r.Remaining())
			}
			// Data follows the offset (number order): place it there.
			if m.Offset > uint64(len(c.region)) || n > uint64(len(c.region))-m.Offset {
				return fmt.Errorf("pull chunk: %d bytes at offset %d overflow the %d-byte object", n, m.Offset, len(c.region))
			}
			dst := c.region[m.Offset : m.Offset+n : m.Offset+n]
			if _, err := io.ReadFull(r, dst); err != nil {
				return fmt.Errorf("pull chunk: %w", err)
			}
			m.Data = dst
			sawData = true
		default:
			// Not the layout above: decode it as protobuf does.
			return c.slow(data, m)
		}
	}
	return nil
}

// slow decodes m with protobuf and copies its data into the region.
func (c pullCodec) slow(data mem.BufferSlice, m *pb.PullResponse) error {
	if err := protoCodec.Unmarshal(data, m); err != nil {
		return err
	}
	n := uint64(len(m.Data))
	if m.Offset > uint64(len(c.region)) || n > uint64(len(c.region))-m.Offset {
		return fmt.Errorf("pull chunk: %d bytes at offset %d overflow the %d-byte object", n, m.Offset, len(c.region))
	}
	dst := c.region[m.Offset : m.Offset+n : m.Offset+n]
	copy(dst, m.Data)
	m.Data = dst
	return nil
}
