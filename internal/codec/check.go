package codec

import (
	"encoding/binary"
	"fmt"
	"reflect"

	"github.com/vmihailenco/msgpack/v5"
)

// MaxDepth is how deeply arrays and maps may nest in a MessagePack value
// goray decodes: deeper input is refused before it is decoded, so that no
// decoder recurses without bound (encoding/json allows 10,000).
const MaxDepth = 1000

// CheckMsgpack checks, without decoding or allocating, that data is exactly
// one well-formed MessagePack value: every length it declares (strings,
// binaries, extensions) fits in the bytes that follow, every array or map
// declares no more elements than bytes follow (each takes at least one),
// and containers nest at most maxDepth deep. A decoder that trusts the
// declared sizes of data that passes allocates at most in proportion to
// len(data), never what a hostile header claims.
func CheckMsgpack(data []byte, maxDepth int) error {
	// open holds, for each container being read, how many values it still
	// has; the value at the top level is one of them.
	open := make([]uint64, 1, 16)
	open[0] = 1
	i := 0
	left := func() uint64 { return uint64(len(data) - i) }
	// take skips n more bytes of the value at start.
	take := func(start int, n uint64) error {
		if n > left() {
			return fmt.Errorf("msgpack: the value at byte %d declares %d bytes, only %d follow", start, n, left())
		}
		i += int(n)
		return nil
	}
	// length reads a big-endian length of w bytes.
	length := func(start, w int) (uint64, error) {
		if uint64(w) > left() {
			return 0, fmt.Errorf("msgpack: the value at byte %d is cut short", start)
		}
		var n uint64
		switch w {
		case 1:
			n = uint64(data[i])
		case 2:
			n = uint64(binary.BigEndian.Uint16(data[i:]))
		case 4:
			n = uint64(binary.BigEndian.Uint32(data[i:]))
		}
		i += w
		return n, nil
	}
	// container opens one of n values (2n for a map's keys and values).
	container := func(start int, n uint64) error {
		if len(open) > maxDepth {
			return fmt.Errorf("msgpack: arrays and maps nest more than %d deep at byte %d", maxDepth, start)
		}
		if n > left() {
			return fmt.Errorf("msgpack: the container at byte %d declares %d values, only %d bytes follow", start, n, left())
		}
		if n > 0 {
			open = append(open, n)
		}
		return nil
	}
	for len(open) > 0 {
		if open[len(open)-1] == 0 {
			open = open[:len(open)-1]
			continue
		}
		open[len(open)-1]--
		if i >= len(data) {
			return fmt.Errorf("msgpack: the value ends early, at byte %d", i)
		}
		start, b := i, data[i]
		i++
		var err error
		switch {
		case b <= 0x7f || b >= 0xe0 || b == 0xc0 || b == 0xc2 || b == 0xc3:
			// positive and negative fixint, nil, false, true
		case b >= 0x80 && b <= 0x8f:
			err = container(start, 2*uint64(b&0x0f))
		case b >= 0x90 && b <= 0x9f:
			err = container(start, uint64(b&0x0f))
		case b >= 0xa0 && b <= 0xbf:
			err = take(start, uint64(b&0x1f))
		case b == 0xc4 || b == 0xd9: // bin8, str8
			err = skipSized(take, length, start, 1)
		case b == 0xc5 || b == 0xda: // bin16, str16
			err = skipSized(take, length, start, 2)
		case b == 0xc6 || b == 0xdb: // bin32, str32
			err = skipSized(take, length, start, 4)
		case b == 0xc7: // ext8: length, type, data
			err = skipSized(take, length, start, 1, 1)
		case b == 0xc8:
			err = skipSized(take, length, start, 2, 1)
		case b == 0xc9:
			err = skipSized(take, length, start, 4, 1)
		case b == 0xca || b == 0xce || b == 0xd2: // float32, uint32, int32
			err = take(start, 4)
		case b == 0xcb || b == 0xcf || b == 0xd3: // float64, uint64, int64
			err = take(start, 8)
		case b == 0xcc || b == 0xd0:
			err = take(start, 1)
		case b == 0xcd || b == 0xd1:
			err = take(start, 2)
		case b >= 0xd4 && b <= 0xd8: // fixext 1, 2, 4, 8, 16: type and data
			err = take(start, 1+(1<<(b-0xd4)))
		case b == 0xdc || b == 0xdd: // array16, array32
			var n uint64
			if n, err = length(start, 2<<(b-0xdc)); err == nil {
				err = container(start, n)
			}
		case b == 0xde || b == 0xdf: // map16, map32
			var n uint64
			if n, err = length(start, 2<<(b-0xde)); err == nil {
				err = container(start, 2*n)
			}
		default: // 0xc1
			err = fmt.Errorf("msgpack: invalid code 0x%02x at byte %d", b, start)
		}
		if err != nil {
			return err
		}
	}
	if i != len(data) {
		return fmt.Errorf("msgpack: %d bytes follow the value", len(data)-i)
	}
	return nil
}

// skipSized skips a value whose header has a w-byte length, then extra
// bytes (an extension's type), then that many bytes.
func skipSized(take func(int, uint64) error, length func(int, int) (uint64, error), start, w int, extra ...uint64) error {
	n, err := length(start, w)
	if err != nil {
		return err
	}
	for _, e := range extra {
		n += e
	}
	return take(start, n)
}

// checkScalar refuses a MessagePack value that the decoder would silently
// change on its way into a scalar of type t: an integer out of t's range
// (2^63 into an int64 would wrap), a nil or a value of another kind where a
// number, bool or string is wanted (nil would decode as 0). Types with
// decoders of their own, and every non-scalar type, are left to the decoder.
func checkScalar(data []byte, t reflect.Type) error {
	k := t.Kind()
	if len(data) == 0 || k > reflect.Float64 && k != reflect.String || k == reflect.Uintptr {
		return nil
	}
	if t.Implements(customDecoder) || reflect.PointerTo(t).Implements(customDecoder) ||
		t.Implements(unmarshaler) || reflect.PointerTo(t).Implements(unmarshaler) {
		return nil
	}
	b := data[0]
	got := msgpackKind(b)
	switch k {
	case reflect.Bool:
		if got != "bool" {
			return fmt.Errorf("want a bool for %s, got %s", t, got)
		}
	case reflect.String:
		if got != "string" && got != "binary" {
			return fmt.Errorf("want a string for %s, got %s", t, got)
		}
	case reflect.Float32, reflect.Float64:
		if got != "integer" && got != "float" {
			return fmt.Errorf("want a number for %s, got %s", t, got)
		}
	default: // integers
		if got != "integer" {
			return fmt.Errorf("want an integer for %s, got %s", t, got)
		}
		neg, mag := msgpackInt(data)
		bits := t.Bits()
		switch {
		case k >= reflect.Uint && neg:
			return fmt.Errorf("want a non-negative integer for %s, got -%d", t, mag)
		case k >= reflect.Uint && bits < 64 && mag > 1<<bits-1:
			return fmt.Errorf("%d does not fit in %s", mag, t)
		case k < reflect.Uint && !neg && mag > 1<<(bits-1)-1:
			return fmt.Errorf("%d does not fit in %s", mag, t)
		case k < reflect.Uint && neg && mag > 1<<(bits-1):
			return fmt.Errorf("-%d does not fit in %s", mag, t)
		}
	}
	return nil
}

var (
	customDecoder = reflect.TypeFor[msgpack.CustomDecoder]()
	unmarshaler   = reflect.TypeFor[msgpack.Unmarshaler]()
)

// msgpackKind names the kind of the value whose first byte is b.
func msgpackKind(b byte) string {
	switch {
	case b <= 0x7f || b >= 0xe0 || b >= 0xcc && b <= 0xd3:
		return "integer"
	case b == 0xc0:
		return "nil"
	case b == 0xc2 || b == 0xc3:
		return "bool"
	case b == 0xca || b == 0xcb:
		return "float"
	case b >= 0xa0 && b <= 0xbf || b >= 0xd9 && b <= 0xdb:
		return "string"
	case b >= 0xc4 && b <= 0xc6:
		return "binary"
	case b >= 0x90 && b <= 0x9f || b == 0xdc || b == 0xdd:
		return "an array"
	case b >= 0x80 && b <= 0x8f || b == 0xde || b == 0xdf:
		return "a map"
	}
	return "an extension"
}

// msgpackInt is the sign and magnitude of the integer data starts with
// (CheckMsgpack has checked that its bytes are there).
func msgpackInt(data []byte) (neg bool, mag uint64) {
	b := data[0]
	signed := func(v int64) (bool, uint64) {
		if v < 0 {
			return true, uint64(-(v + 1)) + 1
		}
		return false, uint64(v)
	}
	switch {
	case b <= 0x7f:
		return false, uint64(b)
	case b >= 0xe0:
		return signed(int64(int8(b)))
	case b == 0xcc:
		return false, uint64(data[1])
	case b == 0xcd:
		return false, uint64(binary.BigEndian.Uint16(data[1:]))
	case b == 0xce:
		return false, uint64(binary.BigEndian.Uint32(data[1:]))
	case b == 0xcf:
		return false, binary.BigEndian.Uint64(data[1:])
	case b == 0xd0:
		return signed(int64(int8(data[1])))
	case b == 0xd1:
		return signed(int64(int16(binary.BigEndian.Uint16(data[1:]))))
	case b == 0xd2:
		return signed(int64(int32(binary.BigEndian.Uint32(data[1:]))))
	default: // 0xd3
		return signed(int64(binary.BigEndian.Uint64(data[1:])))
	}
}
