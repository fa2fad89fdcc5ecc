package cache

import (
	"fmt"

	"github.com/vmihailenco/msgpack/v5"
)

// Requests and replies travel as MessagePack arrays of their fields in a
// fixed order, written and read by hand: a shard's call costs a few
// hundred nanoseconds of coding instead of reflection over tagged structs.
// The order is part of the wire: fields are only ever appended, a reader
// takes the fields it knows from a longer array and leaves the ones a
// shorter array lacks at zero, so a client and a shard of different goray
// versions (a gateway and a deployed binary) still understand each other.

const (
	requestFields = 17
	replyFields   = 20
)

// EncodeMsgpack writes r as an array.
func (r Request) EncodeMsgpack(e *msgpack.Encoder) error {
	c := r.Config
	return encodeAll(e, requestFields,
		func() error { return e.EncodeInt(int64(r.Op)) },
		func() error { return e.EncodeString(r.Key) },
		func() error { return e.EncodeInt(int64(r.Val.Enc)) },
		func() error { return e.EncodeBytes(r.Val.Data) },
		func() error { return e.EncodeInt(int64(r.Old.Enc)) },
		func() error { return e.EncodeBytes(r.Old.Data) },
		func() error { return e.EncodeBool(r.Absent) },
		func() error { return e.EncodeInt(r.TTLms) },
		func() error { return e.EncodeUint(r.Lease) },
		func() error { return e.EncodeInt(r.LeaseMs) },
		func() error { return e.EncodeInt(r.Delta) },
		func() error { return e.EncodeString(r.Fn) },
		func() error { return e.EncodeString(c.Name) },
		func() error { return e.EncodeInt(int64(c.Shards)) },
		func() error { return e.EncodeInt(int64(c.MaxEntries)) },
		func() error { return e.EncodeInt(c.MaxBytes) },
		func() error { return e.EncodeInt(c.TTLms) },
	)
}

// DecodeMsgpack reads an array written by EncodeMsgpack.
func (r *Request) DecodeMsgpack(d *msgpack.Decoder) error {
	*r = Request{}
	var op, enc, oldEnc, shards, maxEntries int64
	return decodeAll(d, "cache request",
		func() (err error) { op, err = d.DecodeInt64(); r.Op = Op(op); return },
		func() (err error) { r.Key, err = d.DecodeString(); return },
		func() (err error) { enc, err = d.DecodeInt64(); r.Val.Enc = int32(enc); return },
		func() (err error) { r.Val.Data, err = d.DecodeBytes(); return },
		func() (err error) { oldEnc, err = d.DecodeInt64(); r.Old.Enc = int32(oldEnc); return },
		func() (err error) { r.Old.Data, err = d.DecodeBytes(); return },
		func() (err error) { r.Absent, err = d.DecodeBool(); return },
		func() (err error) { r.TTLms, err = d.DecodeInt64(); return },
		func() (err error) { r.Lease, err = d.DecodeUint64(); return },
		func() (err error) { r.LeaseMs, err = d.DecodeInt64(); return },
		func() (err error) { r.Delta, err = d.DecodeInt64(); return },
		func() (err error) { r.Fn, err = d.DecodeString(); return },
		func() (err error) { r.Config.Name, err = d.DecodeString(); return },
		func() (err error) { shards, err = d.DecodeInt64(); r.Config.Shards = int(shards); return },
		func() (err error) { maxEntries, err = d.DecodeInt64(); r.Config.MaxEntries = int(maxEntries); return },
		func() (err error) { r.Config.MaxBytes, err = d.DecodeInt64(); return },
		func() (err error) { r.Config.TTLms, err = d.DecodeInt64(); return },
	)
}

// EncodeMsgpack writes r as an array.
func (r Reply) EncodeMsgpack(e *msgpack.Encoder) error {
	s, c := r.Stats, r.Config
	return encodeAll(e, replyFields,
		func() error { return e.EncodeInt(int64(r.Code)) },
		func() error { return e.EncodeInt(int64(r.Val.Enc)) },
		func() error { return e.EncodeBytes(r.Val.Data) },
		func() error { return e.EncodeUint(r.Lease) },
		func() error { return e.EncodeInt(r.Int) },
		func() error { return e.EncodeString(r.Err) },
		func() error { return e.EncodeUint(s.Hits) },
		func() error { return e.EncodeUint(s.Misses) },
		func() error { return e.EncodeUint(s.Evictions) },
		func() error { return e.EncodeUint(s.Expirations) },
		func() error { return e.EncodeInt(s.Entries) },
		func() error { return e.EncodeInt(s.Bytes) },
		func() error { return e.EncodeUint(s.Computes) },
		func() error { return e.EncodeString(s.Node) },
		func() error { return e.EncodeInt(int64(s.Unavailable)) },
		func() error { return e.EncodeString(c.Name) },
		func() error { return e.EncodeInt(int64(c.Shards)) },
		func() error { return e.EncodeInt(int64(c.MaxEntries)) },
		func() error { return e.EncodeInt(c.MaxBytes) },
		func() error { return e.EncodeInt(c.TTLms) },
	)
}

// DecodeMsgpack reads an array written by EncodeMsgpack.
func (r *Reply) DecodeMsgpack(d *msgpack.Decoder) error {
	*r = Reply{}
	var code, enc, unavailable, shards, maxEntries int64
	s, c := &r.Stats, &r.Config
	return decodeAll(d, "cache reply",
		func() (err error) { code, err = d.DecodeInt64(); r.Code = Code(code); return },
		func() (err error) { enc, err = d.DecodeInt64(); r.Val.Enc = int32(enc); return },
		func() (err error) { r.Val.Data, err = d.DecodeBytes(); return },
		func() (err error) { r.Lease, err = d.DecodeUint64(); return },
		func() (err error) { r.Int, err = d.DecodeInt64(); return },
		func() (err error) { r.Err, err = d.DecodeString(); return },
		func() (err error) { s.Hits, err = d.DecodeUint64(); return },
		func() (err error) { s.Misses, err = d.DecodeUint64(); return },
		func() (err error) { s.Evictions, err = d.DecodeUint64(); return },
		func() (err error) { s.Expirations, err = d.DecodeUint64(); return },
		func() (err error) { s.Entries, err = d.DecodeInt64(); return },
		func() (err error) { s.Bytes, err = d.DecodeInt64(); return },
		func() (err error) { s.Computes, err = d.DecodeUint64(); return },
		func() (err error) { s.Node, err = d.DecodeString(); return },
		func() (err error) { unavailable, err = d.DecodeInt64(); s.Unavailable = int(unavailable); return },
		func() (err error) { c.Name, err = d.DecodeString(); return },
		func() (err error) { shards, err = d.DecodeInt64(); c.Shards = int(shards); return },
		func() (err error) { maxEntries, err = d.DecodeInt64(); c.MaxEntries = int(maxEntries); return },
		func() (err error) { c.MaxBytes, err = d.DecodeInt64(); return },
		func() (err error) { c.TTLms, err = d.DecodeInt64(); return },
	)
}

func encodeAll(e *msgpack.Encoder, n int, fields ...func() error) error {
	if len(fields) != n {
		panic(fmt.Sprintf("cache: %d fields encoded, want %d", len(fields), n))
	}
	if err := e.EncodeArrayLen(n); err != nil {
		return err
	}
	for _, f := range fields {
		if err := f(); err != nil {
			return err
		}
	}
	return nil
}

// decodeAll reads an array's first fields with fields, skipping the ones
// past what it knows.
func decodeAll(d *msgpack.Decoder, what string, fields ...func() error) error {
	n, err := d.DecodeArrayLen()
	if err != nil {
		return fmt.Errorf("%s: %w", what, err)
	}
	if n < 1 {
		return fmt.Errorf("%s: an empty array", what)
	}
	for i := range n {
		if i < len(fields) {
			err = fields[i]()
		} else {
			err = d.Skip()
		}
		if err != nil {
			return fmt.Errorf("%s: field %d: %w", what, i, err)
		}
	}
	return nil
}
