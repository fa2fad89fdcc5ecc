// Package codec turns Go values into goray.v1.Payloads and back.
//
// Encodings (DESIGN.md, "Wire protocol"): []byte travels raw; a proto.Message
// as protobuf with its type URL; every other Go value as MessagePack, which
// every language reads. JSON is decoded for clients that send it. Nothing that
// can execute code on decode is accepted.
package codec

import (
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

// Encode encodes v.
func Encode(v any) (*pb.Payload, error) {
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
		b, err := msgpack.Marshal(v)
		if err != nil {
			return nil, fmt.Errorf("encode %T as msgpack: %w", v, err)
		}
		return &pb.Payload{Encoding: pb.Encoding_ENCODING_MSGPACK, Data: b}, nil
	}
}

// Decode decodes p into a value of type T.
func Decode[T any](p *pb.Payload) (T, error) {
	var zero T
	v, err := DecodeTo(p, reflect.TypeFor[T]())
	if err != nil {
		return zero, err
	}
	if !v.IsValid() {
		return zero, nil
	}
	out, ok := v.Interface().(T)
	if !ok {
		return zero, nil // a nil interface value
	}
	return out, nil
}

// DecodeTo decodes p into a new value of type t.
func DecodeTo(p *pb.Payload, t reflect.Type) (reflect.Value, error) {
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
		ptr := reflect.New(t)
		if err := msgpack.Unmarshal(p.GetData(), ptr.Interface()); err != nil {
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
