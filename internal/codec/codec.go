// Package codec turns Go values into goray.v1.Payloads and back.
//
// Encodings (DESIGN.md, "Wire protocol"): []byte travels raw; a proto.Message
// as protobuf with its type URL; every other Go value as MessagePack, which
// every language reads. JSON is decoded for clients that send it. Nothing that
// can execute code on decode is accepted.
package codec

import (
	"bytes"
	"encoding/json"
	"fmt"
	"reflect"

	pb "github.com/goray/goray/proto/goray/v1"
	"github.com/vmihailenco/msgpack/v5"
	"google.golang.org/protobuf/proto"
)

var (
	bytesType = reflect.TypeFor[[]byte]()
	msgType   = reflect.TypeFor[proto.Message]()
)

// TypeURLPrefix prefixes the full name of a protobuf message in a type URL.
const TypeURLPrefix = "type.googleapis.com/"

// A Session is the calling process's state for one Encode or Decode: the
// custom MessagePack encoders and decoders of values that stand for live
// state (refs and actor handles, package core) find it with SessionOf and
// DecodeSessionOf. Nil outside EncodeSession and DecodeToSession.
type Session any

// encBuf is the writer of a session's encoder: the session rides along.
type encBuf struct {
	bytes.Buffer
	s Session
}

// decBuf is the reader of a session's decoder.
type decBuf struct {
	*bytes.Reader
	s Session
}

// SessionOf is the session of the Encode that enc is running, or nil.
func SessionOf(enc *msgpack.Encoder) Session {
	if b, ok := enc.Writer().(*encBuf); ok {
		return b.s
	}
	return nil
}

// DecodeSessionOf is the session of the Decode that dec is running, or nil.
func DecodeSessionOf(dec *msgpack.Decoder) Session {
	if b, ok := dec.Buffered().(*decBuf); ok {
		return b.s
	}
	return nil
}

// Encode encodes v.
func Encode(v any) (*pb.Payload, error) { return EncodeSession(v, nil) }

// EncodeSession encodes v, giving s to the custom encoders inside it.
func EncodeSession(v any, s Session) (*pb.Payload, error) {
	switch x := v.(type) {
	case []byte:
		return &pb.Payload{Encoding: pb.Encoding_ENCODING_RAW, Data: x}, nil
	case proto.Message:
		b, err := proto.Marshal(x)
		if err != nil {
			return nil, fmt.Errorf("encode %T as protobuf: %w", v, err)
		}
		return &pb.Payload{Encoding: pb.Encoding_ENCODING_PROTOBUF, Data: b,
			TypeUrl: TypeURLPrefix + string(x.ProtoReflect().Descriptor().FullName())}, nil
	default:
		enc := msgpack.GetEncoder()
		buf := &encBuf{s: s}
		enc.Reset(buf)
		err := enc.Encode(v)
		msgpack.PutEncoder(enc)
		if err != nil {
			return nil, fmt.Errorf("encode %T as msgpack: %w", v, err)
		}
		return &pb.Payload{Encoding: pb.Encoding_ENCODING_MSGPACK, Data: buf.Bytes()}, nil
	}
}

// Decode decodes p into a value of type T.
func Decode[T any](p *pb.Payload) (T, error) { return DecodeSession[T](p, nil) }

// DecodeTo decodes p into a new value of type t.
func DecodeTo(p *pb.Payload, t reflect.Type) (reflect.Value, error) {
	return DecodeToSession(p, t, nil)
}

// DecodeSession decodes p into a value of type T, giving s to the custom
// decoders inside it.
func DecodeSession[T any](p *pb.Payload, s Session) (T, error) {
	var zero T
	v, err := DecodeToSession(p, reflect.TypeFor[T](), s)
	if err != nil || !v.IsValid() {
		return zero, err
	}
	out, ok := v.Interface().(T)
	if !ok {
		return zero, nil // a nil interface value
	}
	return out, nil
}

// DecodeToSession decodes p into a new value of type t, giving s to the
// custom decoders inside it.
func DecodeToSession(p *pb.Payload, t reflect.Type, s Session) (reflect.Value, error) {
	if p == nil {
		return reflect.Value{}, fmt.Errorf("decode %s: no payload", t)
	}
	switch p.GetEncoding() {
	case pb.Encoding_ENCODING_RAW:
		switch {
		case t == bytesType:
			return reflect.ValueOf(p.GetData()), nil
		case t.Kind() == reflect.Interface && bytesType.Implements(t):
			v := reflect.New(t).Elem()
			v.Set(reflect.ValueOf(p.GetData()))
			return v, nil
		}
		return reflect.Value{}, fmt.Errorf("cannot decode raw bytes into %s (raw payloads decode only into []byte)", t)
	case pb.Encoding_ENCODING_PROTOBUF:
		if t.Implements(msgType) && t.Kind() == reflect.Pointer {
			v := reflect.New(t.Elem())
			m := v.Interface().(proto.Message)
			if want := TypeURLPrefix + string(m.ProtoReflect().Descriptor().FullName()); p.GetTypeUrl() != "" && p.GetTypeUrl() != want {
				return reflect.Value{}, fmt.Errorf("cannot decode protobuf %s into %s (want %s)", p.GetTypeUrl(), t, want)
			}
			if err := proto.Unmarshal(p.GetData(), m); err != nil {
				return reflect.Value{}, fmt.Errorf("decode protobuf into %s: %w", t, err)
			}
			return v, nil
		}
		return reflect.Value{}, fmt.Errorf("cannot decode protobuf %s into %s (not a protobuf message type)", p.GetTypeUrl(), t)
	case pb.Encoding_ENCODING_MSGPACK:
		// The decoder preallocates what headers declare, and recurses into
		// nested values: check that the bytes hold what they claim first.
		if err := CheckMsgpack(p.GetData(), MaxDepth); err != nil {
			return reflect.Value{}, fmt.Errorf("cannot decode msgpack value into %s: %w", t, err)
		}
		if err := checkScalar(p.GetData(), t); err != nil {
			return reflect.Value{}, fmt.Errorf("cannot decode msgpack value into %s: %w", t, err)
		}
		ptr := reflect.New(t)
		dec := msgpack.GetDecoder()
		dec.UsePreallocateValues(true)
		dec.Reset(&decBuf{Reader: bytes.NewReader(p.GetData()), s: s})
		err := dec.Decode(ptr.Interface())
		msgpack.PutDecoder(dec)
		if err != nil {
			return reflect.Value{}, fmt.Errorf("cannot decode msgpack value into %s: %w", t, err)
		}
		return ptr.Elem(), nil
	case pb.Encoding_ENCODING_JSON:
		ptr := reflect.New(t)
		if err := json.Unmarshal(p.GetData(), ptr.Interface()); err != nil {
			return reflect.Value{}, fmt.Errorf("cannot decode JSON value into %s: %w", t, err)
		}
		return ptr.Elem(), nil
	default:
		return reflect.Value{}, fmt.Errorf("unknown payload encoding %d (want raw, protobuf, msgpack or json)", p.GetEncoding())
	}
}
