package core

import (
	"context"
	"fmt"
	"reflect"
	"time"

	"github.com/goray/goray/internal/codec"
	"github.com/goray/goray/internal/errs"
	"github.com/goray/goray/internal/ids"
	pb "github.com/goray/goray/proto/goray/v1"
	"github.com/vmihailenco/msgpack/v5"
	"google.golang.org/protobuf/proto"
)

// Refs and actor handles inside values (docs/objects.md). Inside a
// MessagePack value a ref travels as an extension of type refExt holding a
// goray.v1.ObjectRef, and an actor handle as one of type actorExt holding a
// goray.v1.ActorInfo; a zero ref or handle travels as nil. The process that
// encodes a value holds the refs inside it until the receiver holds them
// itself: a call's arguments until the call completes, a stored value while
// the object lives, a result until the caller is registered as a borrower.
const (
	refExt   int8 = 71
	actorExt int8 = 72
)

// encSession collects the handles of the refs inside a value being encoded.
type encSession struct {
	c    *Core
	refs []*handle
}

// decSession collects the refs decoded from a value, to be registered in
// one batch once the value is decoded.
type decSession struct {
	c    *Core
	refs []*handle
}

// encode encodes v and returns the handles of the refs inside it.
func (c *Core) encode(v any) (*pb.Payload, []*handle, error) {
	switch v.(type) {
	case int, int64, string, bool, float64, []byte, nil:
		p, err := codec.Encode(v) // cannot hold a ref
		return p, nil, err
	}
	s := &encSession{c: c}
	p, err := codec.EncodeSession(v, s)
	return p, s.refs, err
}

// DecodeValue decodes p as a T; refs inside it come back held and
// registered with their owners.
func DecodeValue[T any](ctx context.Context, c *Core, p *pb.Payload) (T, error) {
	if p.GetEncoding() != pb.Encoding_ENCODING_MSGPACK {
		return codec.Decode[T](p)
	}
	s := &decSession{c: c}
	v, err := codec.DecodeSession[T](p, s)
	s.finish(ctx)
	return v, err
}

// decodeTo is DecodeValue for a type known at run time.
func (c *Core) decodeTo(ctx context.Context, p *pb.Payload, t reflect.Type) (reflect.Value, error) {
	if p.GetEncoding() != pb.Encoding_ENCODING_MSGPACK {
		return codec.DecodeTo(p, t)
	}
	s := &decSession{c: c}
	v, err := codec.DecodeToSession(p, t, s)
	s.finish(ctx)
	return v, err
}

// finish takes this process's holds on the refs decoded.
func (s *decSession) finish(ctx context.Context) {
	if len(s.refs) > 0 {
		s.c.fill(ctx, s.refs)
	}
}

// EncodeRef writes r into a MessagePack value (objectstore.Ref's
// EncodeMsgpack). A zero ref is nil; a ref whose call failed cannot travel.
func EncodeRef(enc *msgpack.Encoder, r Ref) error {
	if r.err != nil {
		return errs.New(errs.KindInvalidArgument, "", "a Ref inside the value holds the error of its call, and cannot be passed on: %v", r.err)
	}
	if r.h == nil {
		return enc.EncodeNil()
	}
	if err := r.Usable(); err != nil {
		return err
	}
	if r.h.c != nil {
		r.h.c.shared(r.h)
	}
	if s, ok := codec.SessionOf(enc).(*encSession); ok {
		s.refs = append(s.refs, r.h)
	}
	b, err := proto.Marshal(r.h.info.Proto())
	if err != nil {
		return err
	}
	if err := enc.EncodeExtHeader(refExt, len(b)); err != nil {
		return err
	}
	_, err = enc.Writer().Write(b)
	return err
}

// DecodeRef reads a ref written by EncodeRef (objectstore.Ref's
// DecodeMsgpack). Inside a Get or a call's arguments the ref is held and
// registered when the whole value is decoded; elsewhere (a program's own
// msgpack.Unmarshal) at once.
func DecodeRef(dec *msgpack.Decoder) (Ref, error) {
	b, ok, err := decodeExt(dec, refExt, "a Ref")
	if err != nil || !ok {
		return Ref{}, err
	}
	var p pb.ObjectRef
	if err := proto.Unmarshal(b, &p); err != nil {
		return Ref{}, fmt.Errorf("decode a Ref: %w", err)
	}
	info, err := RefFromProto(&p)
	if err != nil {
		return Ref{}, fmt.Errorf("decode a Ref: %w", err)
	}
	h := &handle{info: info}
	if s, ok := codec.DecodeSessionOf(dec).(*decSession); ok {
		s.refs = append(s.refs, h)
		return Ref{h: h}, nil
	}
	c, err := Current()
	if err != nil {
		return Ref{}, err
	}
	ctx, cancel := context.WithTimeout(c.ctx, 10*time.Second)
	defer cancel()
	c.fill(ctx, []*handle{h})
	return Ref{h: h}, nil
}

// decodingCore is the core decoding dec's value: the session's, else the
// process's.
func decodingCore(dec *msgpack.Decoder) (*Core, error) {
	if s, ok := codec.DecodeSessionOf(dec).(*decSession); ok {
		return s.c, nil
	}
	return Current()
}

// decodeExt reads an extension of type want, or nil (ok false).
func decodeExt(dec *msgpack.Decoder, want int8, what string) ([]byte, bool, error) {
	code, err := dec.PeekCode()
	if err != nil {
		return nil, false, err
	}
	if code == 0xc0 { // nil
		return nil, false, dec.DecodeNil()
	}
	id, n, err := dec.DecodeExtHeader()
	if err != nil {
		return nil, false, fmt.Errorf("decode %s: %w", what, err)
	}
	if id != want {
		return nil, false, fmt.Errorf("decode %s: found MessagePack extension %d, want %d", what, id, want)
	}
	if n < 0 || n > 1<<16 {
		return nil, false, fmt.Errorf("decode %s: extension of %d bytes", what, n)
	}
	b := make([]byte, n)
	if err := dec.ReadFull(b); err != nil {
		return nil, false, fmt.Errorf("decode %s: %w", what, err)
	}
	return b, true, nil
}

// fill takes a hold on each decoded ref, in place: its handle was handed
// out inside the value before the hold was taken.
func (c *Core) fill(ctx context.Context, hs []*handle) {
	var foreign map[string][]*handle
	for _, h := range hs {
		if h.info.Owner == c.addr {
			if c.objs.acquire(h.info.ID) {
				c.arm(h, true)
			} else {
				h.err = errFreed(h.info.ID)
			}
			continue
		}
		if foreign == nil {
			foreign = map[string][]*handle{}
		}
		foreign[h.info.Owner] = append(foreign[h.info.Owner], h)
	}
	for owner, batch := range foreign {
		infos := make([]RefInfo, len(batch))
		for i, h := range batch {
			infos[i] = h.info
		}
		failed := c.borrows.acquire(ctx, c, owner, infos)
		for i, h := range batch {
			if failed[i] != nil {
				h.err = failed[i]
			} else {
				c.arm(h, false)
			}
		}
	}
}

// arm makes h the handle of a hold just taken.
func (c *Core) arm(h *handle, owned bool) {
	h.c, h.owned, h.counted = c, owned, true
	h.cleanup = runtimeAddCleanup(h, holdKey{c, h.info.ID, owned})
}

// EncodeActor writes an actor handle into a MessagePack value
// (actor.Handle's EncodeMsgpack); a nil handle is nil.
func EncodeActor(enc *msgpack.Encoder, h *ActorHandle) error {
	if h == nil || h.route == nil {
		return enc.EncodeNil()
	}
	r := h.route
	r.mu.Lock()
	info := &pb.ActorInfo{
		Spec:          &pb.ActorSpec{ActorId: h.ID[:], TypeName: h.TypeName, Name: h.Name, MaxTaskRetries: r.maxTaskRetries},
		State:         pb.ActorState_ACTOR_STATE_ALIVE,
		WorkerAddress: r.addr,
		NumRestarts:   r.incarnation,
	}
	r.mu.Unlock()
	b, err := proto.Marshal(info)
	if err != nil {
		return err
	}
	if err := enc.EncodeExtHeader(actorExt, len(b)); err != nil {
		return err
	}
	_, err = enc.Writer().Write(b)
	return err
}

// DecodeActor reads a handle written by EncodeActor; nil for nil. The
// handle routes calls where the actor ran when it was encoded, and finds it
// again through the head if it has moved.
func DecodeActor(dec *msgpack.Decoder) (*ActorHandle, error) {
	b, ok, err := decodeExt(dec, actorExt, "an actor handle")
	if err != nil || !ok {
		return nil, err
	}
	var info pb.ActorInfo
	if err := proto.Unmarshal(b, &info); err != nil {
		return nil, fmt.Errorf("decode an actor handle: %w", err)
	}
	if _, err := ids.ParseActorID(info.GetSpec().GetActorId()); err != nil {
		return nil, fmt.Errorf("decode an actor handle: %w", err)
	}
	c, err := decodingCore(dec)
	if err != nil {
		return nil, err
	}
	return c.handleFromInfo(&info)
}
