package cache

import (
	"bytes"
	"fmt"

	"github.com/vmihailenco/msgpack/v5"

	pb "github.com/goray/goray/proto/goray/v1"
)

var encMsgpack = int32(pb.Encoding_ENCODING_MSGPACK)

// EncodeInt is n as a MessagePack value, as OpIncr stores counters.
func EncodeInt(n int64) Value {
	b, _ := msgpack.Marshal(n) // an int64 always encodes
	return Value{Enc: encMsgpack, Data: b}
}

// DecodeInt reads an integer stored as MessagePack (by OpIncr, or by any
// client that stored a MessagePack integer).
func DecodeInt(v Value) (int64, error) {
	if v.Enc != encMsgpack {
		return 0, fmt.Errorf("the value is not a MessagePack integer (encoding %s): only integers can be incremented", pb.Encoding(v.Enc))
	}
	d := msgpack.NewDecoder(bytes.NewReader(v.Data))
	code, err := d.PeekCode()
	if err != nil {
		return 0, fmt.Errorf("the value is not a MessagePack integer: %v", err)
	}
	if !isIntCode(code) {
		return 0, fmt.Errorf("the value is not a MessagePack integer: only integers can be incremented")
	}
	n, err := d.DecodeInt64()
	if err != nil {
		return 0, fmt.Errorf("the value is not a MessagePack integer: %v", err)
	}
	return n, nil
}

func isIntCode(c byte) bool {
	switch {
	case c <= 0x7f, c >= 0xe0: // positive and negative fixint
		return true
	case c >= 0xcc && c <= 0xd3: // uint8..64, int8..64
		return true
	}
	return false
}
