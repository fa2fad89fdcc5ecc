package cache

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"sync"
	"sync/atomic"

	"github.com/vmihailenco/msgpack/v5"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/goray/goray/internal/core"
	"github.com/goray/goray/internal/errs"
	"github.com/goray/goray/internal/ids"
)

// The data path. A shard is an actor, but an operation on it need not be
// an actor call: the worker process that hosts a shard serves ShardData on
// its worker server (core.RegisterService), and a client keeps one
// bidirectional stream per shard host, on which it sends frames (a tag,
// the shard's actor ID and incarnation, the request) and receives replies
// tagged alike, pipelined: an operation costs one message each way on a
// stream that is already open, as a raw gRPC round trip does.
//
// The host runs a frame's request on the shard object itself (Shard.Do,
// under the shard's lock, as the actor's method does), in the stream's
// receive goroutine, so the frames of one stream run in the order sent.
// When the host no longer hosts that incarnation (the shard was killed,
// restarted elsewhere, or never ran there) it answers "not here", and when
// the stream breaks (its process died) every frame in flight fails: the
// client then makes the operation an actor call, which finds the shard's
// new incarnation, or its death (the shard is lost), and updates the
// handle's location for the next operation's frame. Creation,
// configuration and the prober's pings stay actor calls.

const (
	shardDataService = "goray.cache.ShardData"
	shardDataMethod  = "/" + shardDataService + "/Ops"

	// Reply frame status bytes.
	frameReply   = 0 // a Reply follows
	frameNotHere = 1 // the host does not host that incarnation
	frameBad     = 2 // the frame was malformed; error text follows
)

var shardDataDesc = grpc.ServiceDesc{
	ServiceName: shardDataService,
	HandlerType: (*any)(nil),
	Streams: []grpc.StreamDesc{
		{StreamName: "Ops", Handler: serveShardData, ServerStreams: true, ClientStreams: true},
	},
}

var shardDataStreamDesc = &grpc.StreamDesc{StreamName: "Ops", ServerStreams: true, ClientStreams: true}

func init() {
	core.RegisterService(func(c *core.Core, s grpc.ServiceRegistrar) { s.RegisterService(&shardDataDesc, c) })
}

// serveShardData serves one client's stream: each frame in turn.
func serveShardData(srv any, stream grpc.ServerStream) error {
	c := srv.(*core.Core)
	in, out := new(wrapperspb.BytesValue), new(wrapperspb.BytesValue)
	var buf bytes.Buffer
	enc := msgpack.NewEncoder(&buf)
	dec := msgpack.NewDecoder(nil)
	var rd bytes.Reader
	for {
		if err := stream.RecvMsg(in); err != nil {
			if errors.Is(err, io.EOF) {
				return nil
			}
			return err
		}
		buf.Reset()
		serveFrame(c, in.GetValue(), &buf, enc, dec, &rd)
		out.Value = buf.Bytes()
		if err := stream.SendMsg(out); err != nil {
			return err
		}
	}
}

// serveFrame runs one request frame and writes its reply frame to buf.
func serveFrame(c *core.Core, f []byte, buf *bytes.Buffer, enc *msgpack.Encoder, dec *msgpack.Decoder, rd *bytes.Reader) {
	tag, n := binary.Uvarint(f)
	if n <= 0 {
		buf.Write([]byte{0, frameBad})
		buf.WriteString("cache frame without a tag")
		return
	}
	buf.Write(f[:n])
	f = f[n:]
	bad := func(format string, a ...any) {
		buf.WriteByte(frameBad)
		fmt.Fprintf(buf, format, a...)
	}
	if len(f) < ids.ActorIDSize {
		bad("cache frame %d: %d bytes, too short for a shard's actor ID", tag, len(f))
		return
	}
	var id ids.ActorID
	copy(id[:], f)
	f = f[ids.ActorIDSize:]
	inc, n := binary.Uvarint(f)
	if n <= 0 || inc > 1<<32-1 {
		bad("cache frame %d: no incarnation", tag)
		return
	}
	f = f[n:]
	obj, ok := c.LocalActor(id, uint32(inc))
	s, isShard := obj.(*Shard)
	if !ok || !isShard {
		buf.WriteByte(frameNotHere)
		return
	}
	rd.Reset(f)
	dec.Reset(rd)
	var req Request
	if err := req.DecodeMsgpack(dec); err != nil {
		bad("cache frame %d: %v", tag, err)
		return
	}
	r := s.Do(context.Background(), req)
	buf.WriteByte(frameReply)
	if err := r.EncodeMsgpack(enc); err != nil {
		// Unreachable: a Reply's fields always encode.
		buf.Truncate(0)
		buf.Write(binary.AppendUvarint(nil, tag))
		bad("cache frame %d: encode the reply: %v", tag, err)
	}
}

// directReply is a reply frame's content: ok false for "not here".
type directReply struct {
	r   Reply
	ok  bool
	err error // the stream broke, or the frame was refused
}

// hostStream is this process's stream to one shard host (a worker's
// address); any goroutine sends on it (sendMu orders the sends), one
// goroutine receives. mu guards the fields below it.
type hostStream struct {
	key    hostKey
	stream grpc.ClientStream
	cancel context.CancelFunc

	sendMu sync.Mutex
	enc    *msgpack.Encoder // guarded by sendMu
	buf    bytes.Buffer     // guarded by sendMu
	msg    wrapperspb.BytesValue

	mu      sync.Mutex
	next    uint64                      // guarded by mu
	waiting map[uint64]chan directReply // guarded by mu
	broken  error                       // guarded by mu
}

type hostKey struct {
	c    *core.Core
	addr string
}

// hosts are this process's streams, one per core and shard host; a broken
// stream leaves it and the next operation opens another.
var hosts struct {
	mu sync.Mutex
	m  map[hostKey]*hostStream
}

// hostFor is the stream to addr, opened when there is none.
func hostFor(c *core.Core, addr string) (*hostStream, error) {
	key := hostKey{c, addr}
	hosts.mu.Lock()
	defer hosts.mu.Unlock()
	if h := hosts.m[key]; h != nil {
		return h, nil
	}
	cc, err := c.Conn(addr)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancel(context.Background())
	st, err := cc.NewStream(ctx, shardDataStreamDesc, shardDataMethod)
	if err != nil {
		cancel()
		return nil, err
	}
	h := &hostStream{key: key, stream: st, cancel: cancel, waiting: map[uint64]chan directReply{}}
	h.enc = msgpack.NewEncoder(&h.buf)
	if hosts.m == nil {
		hosts.m = map[hostKey]*hostStream{}
	}
	hosts.m[key] = h
	go h.receive()
	return h, nil
}

// receive hands each reply frame to its waiter until the stream breaks,
// then fails every waiter.
func (h *hostStream) receive() {
	in := new(wrapperspb.BytesValue)
	dec := msgpack.NewDecoder(nil)
	var rd bytes.Reader
	var err error
	for {
		if err = h.stream.RecvMsg(in); err != nil {
			break
		}
		f := in.GetValue()
		tag, n := binary.Uvarint(f)
		if n <= 0 || len(f) == n {
			err = errs.New(errs.KindInternal, "", "cache: a shard host sent a reply frame without a tag or status")
			break
		}
		var d directReply
		switch f[n] {
		case frameReply:
			rd.Reset(f[n+1:])
			dec.Reset(&rd)
			if d.err = d.r.DecodeMsgpack(dec); d.err == nil {
				d.ok = true
			}
		case frameNotHere:
		default:
			d.err = errs.New(errs.KindInternal, "", "cache: a shard host refused a frame: %s", f[n+1:])
		}
		h.mu.Lock()
		w := h.waiting[tag]
		delete(h.waiting, tag)
		h.mu.Unlock()
		if w != nil {
			w <- d
		}
	}
	h.fail(err)
}

// fail ends the stream with err: its waiters fail, and it leaves hosts.
func (h *hostStream) fail(err error) {
	h.cancel()
	h.mu.Lock()
	if h.broken == nil {
		h.broken = fmt.Errorf("cache: stream to shard host %s broke: %w", h.key.addr, err)
	}
	waiting := h.waiting
	h.waiting = nil
	h.mu.Unlock()
	for _, w := range waiting {
		w <- directReply{err: h.broken}
	}
	hosts.mu.Lock()
	if hosts.m[h.key] == h {
		delete(hosts.m, h.key)
	}
	hosts.mu.Unlock()
}

// send sends req to incarnation inc of shard actor id; the channel gets
// the reply frame.
func (h *hostStream) send(id ids.ActorID, inc uint32, req Request) (chan directReply, error) {
	ch := make(chan directReply, 1)
	h.mu.Lock()
	if h.broken != nil {
		err := h.broken
		h.mu.Unlock()
		return nil, err
	}
	h.next++
	tag := h.next
	h.waiting[tag] = ch
	h.mu.Unlock()

	h.sendMu.Lock()
	h.buf.Reset()
	var hdr [binary.MaxVarintLen64 + ids.ActorIDSize + binary.MaxVarintLen32]byte
	b := binary.AppendUvarint(hdr[:0], tag)
	b = append(b, id[:]...)
	b = binary.AppendUvarint(b, uint64(inc))
	h.buf.Write(b)
	err := req.EncodeMsgpack(h.enc)
	if err == nil {
		h.msg.Value = h.buf.Bytes()
		err = h.stream.SendMsg(&h.msg)
	}
	h.sendMu.Unlock()
	if err != nil {
		h.mu.Lock()
		if h.waiting != nil {
			delete(h.waiting, tag)
		}
		h.mu.Unlock()
		go h.fail(err) // the receiver sees the break too; fail is idempotent
		return nil, err
	}
	return ch, nil
}

// dataPathReplies counts the replies this process got on the data path.
var dataPathReplies atomic.Uint64

// DataPathReplies is how many operations of this process were answered on
// the data path (not as actor calls).
func DataPathReplies() uint64 { return dataPathReplies.Load() }

// directCall is an operation sent on the data path and not yet answered.
type directCall struct {
	ch chan directReply
}

// sendDirect sends req to shard s on its host's stream; nil when the data
// path is not usable now (the shard's location unknown, or no stream to
// its host): the operation goes as an actor call.
func sendDirect(c *core.Core, s *shardRef, req Request) *directCall {
	addr, inc, ok := s.h.Location()
	if !ok {
		return nil
	}
	h, err := hostFor(c, addr)
	if err != nil {
		return nil
	}
	ch, err := h.send(s.h.ID, inc, req)
	if err != nil {
		return nil
	}
	return &directCall{ch: ch}
}

// wait waits for the reply: ok false when the frame was not answered with
// a reply (not here, the stream broke): the operation goes as an actor
// call. err is the context's.
func (d *directCall) wait(ctx context.Context) (r Reply, ok bool, err error) {
	select {
	case rep := <-d.ch:
		if !rep.ok || rep.err != nil {
			return Reply{}, false, nil
		}
		dataPathReplies.Add(1)
		return rep.r, true, nil
	case <-ctx.Done():
		return Reply{}, false, errs.Context(ctx.Err(), "cache")
	}
}
