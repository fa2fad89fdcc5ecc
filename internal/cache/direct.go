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
	Methods:     []grpc.MethodDesc{{MethodName: "RawPort", Handler: rawPortHandler}},
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
	start := buf.Len() // what buf held before (the raw path's length prefix)
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
		buf.Truncate(start)
		buf.Write(binary.AppendUvarint(nil, tag))
		bad("cache frame %d: encode the reply: %v", tag, err)
	}
}

// directReply is a reply frame's content: ok false for "not here".
type directReply struct {
	r       Reply
	ok      bool
	refused bool  // the host answered without running it (not here is !ok alone)
	err     error // the stream broke, the reply did not decode, or the frame was refused
}

// parseReply reads a reply frame.
func parseReply(f []byte, dec *msgpack.Decoder, rd *bytes.Reader) (tag uint64, d directReply, err error) {
	tag, n := binary.Uvarint(f)
	if n <= 0 || len(f) == n {
		return 0, d, errs.New(errs.KindInternal, "", "cache: a shard host sent a reply frame without a tag or status")
	}
	switch f[n] {
	case frameReply:
		rd.Reset(f[n+1:])
		dec.Reset(rd)
		if d.err = d.r.DecodeMsgpack(dec); d.err == nil {
			d.ok = true
		}
	case frameNotHere:
	default:
		d.refused = true
		d.err = errs.New(errs.KindInternal, "", "cache: a shard host refused a frame: %s", f[n+1:])
	}
	return tag, d, nil
}

// appendFrame appends the request frame of req to buf.
func appendFrame(buf *bytes.Buffer, enc *msgpack.Encoder, tag uint64, id ids.ActorID, inc uint32, req Request) error {
	var hdr [binary.MaxVarintLen64 + ids.ActorIDSize + binary.MaxVarintLen32]byte
	b := binary.AppendUvarint(hdr[:0], tag)
	b = append(b, id[:]...)
	b = binary.AppendUvarint(b, uint64(inc))
	buf.Write(b)
	return req.EncodeMsgpack(enc)
}

type hostKey struct {
	c    *core.Core
	addr string
}

// host is this process's data path to one shard host (a worker's
// address): a shared stream on which pipelined (async) frames travel
// tagged, and idle streams for synchronous operations, each of which sends
// one frame and receives its reply in the caller's goroutine, as a raw
// ping-pong does (no hand-off to a receive goroutine). mu guards shared
// and idle.
type host struct {
	key hostKey
	cc  grpc.ClientConnInterface

	rawOnce sync.Once // asks for raw once

	mu      sync.Mutex
	shared  *hostStream   // guarded by mu; nil until an async operation, or after it broke
	idle    []*syncStream // guarded by mu
	raw     string        // guarded by mu; the raw listener's address, "" when there is none (raw.go)
	rawIdle []*rawConn    // guarded by mu
}

// maxIdleSync bounds a host's idle synchronous streams (one per caller
// that ran a synchronous operation at the same time as others).
const maxIdleSync = 64

// hosts are this process's shard hosts, one per core and address; a host
// whose connection fails leaves it and the next operation dials again.
var hosts struct {
	mu sync.Mutex
	m  map[hostKey]*host
}

func hostFor(c *core.Core, addr string) (*host, error) {
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
	h := &host{key: key, cc: cc}
	if hosts.m == nil {
		hosts.m = map[hostKey]*host{}
	}
	hosts.m[key] = h
	return h, nil
}

// drop forgets h (its connection failed to open a stream).
func (h *host) drop() {
	hosts.mu.Lock()
	if hosts.m[h.key] == h {
		delete(hosts.m, h.key)
	}
	hosts.mu.Unlock()
}

func (h *host) open() (grpc.ClientStream, context.CancelFunc, error) {
	ctx, cancel := context.WithCancel(context.Background())
	st, err := h.cc.NewStream(ctx, shardDataStreamDesc, shardDataMethod)
	if err != nil {
		cancel()
		h.drop()
		return nil, nil, err
	}
	return st, cancel, nil
}

// sharedStream is h's shared stream, opened when there is none.
func (h *host) sharedStream() (*hostStream, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.shared != nil {
		return h.shared, nil
	}
	st, cancel, err := h.open()
	if err != nil {
		return nil, err
	}
	s := &hostStream{h: h, stream: st, cancel: cancel, waiting: map[uint64]chan directReply{}}
	s.enc = msgpack.NewEncoder(&s.buf)
	h.shared = s
	go s.receive()
	return s, nil
}

// roundTrip runs req on incarnation inc of shard id and waits for the
// reply: ok false when the data path did not answer it (not here, a
// broken stream); err is the context's.
func (h *host) roundTrip(ctx context.Context, id ids.ActorID, inc uint32, req Request) (Reply, bool, error) {
	h.mu.Lock()
	if sh := h.shared; sh != nil && sh.inflight.Load() > 0 {
		// Pipelined frames are in flight: this one goes behind them, so
		// that it runs after them (one process's operations on a shard
		// run in the order sent).
		h.mu.Unlock()
		ch, err := sh.send(id, inc, req)
		if err != nil {
			return Reply{}, false, nil
		}
		return (&directCall{ch: ch}).wait(ctx)
	}
	h.mu.Unlock()
	if r, ok, err, handled := h.rawRoundTrip(ctx, id, inc, req); handled {
		if ok {
			dataPathReplies.Add(1)
		}
		return r, ok, err
	}
	h.mu.Lock()
	var s *syncStream
	if n := len(h.idle); n > 0 {
		s, h.idle = h.idle[n-1], h.idle[:n-1]
	}
	h.mu.Unlock()
	if s == nil {
		st, cancel, err := h.open()
		if err != nil {
			return Reply{}, false, nil
		}
		s = &syncStream{stream: st, cancel: cancel, dec: msgpack.NewDecoder(nil)}
		s.enc = msgpack.NewEncoder(&s.buf)
	}
	r, ok, usable, err := s.roundTrip(ctx, id, inc, req)
	if usable {
		h.mu.Lock()
		if len(h.idle) < maxIdleSync {
			h.idle = append(h.idle, s)
			s = nil
		}
		h.mu.Unlock()
	}
	if s != nil {
		s.cancel()
	}
	if ok {
		dataPathReplies.Add(1)
	}
	return r, ok, err
}

// syncStream is a stream that one synchronous operation at a time uses.
type syncStream struct {
	stream  grpc.ClientStream
	cancel  context.CancelFunc
	buf     bytes.Buffer
	enc     *msgpack.Encoder
	dec     *msgpack.Decoder
	rd      bytes.Reader
	in, out wrapperspb.BytesValue
}

// roundTrip sends one frame and receives its reply; usable says whether
// the stream can serve the next operation.
func (s *syncStream) roundTrip(ctx context.Context, id ids.ActorID, inc uint32, req Request) (r Reply, ok, usable bool, err error) {
	s.buf.Reset()
	if err := appendFrame(&s.buf, s.enc, 0, id, inc, req); err != nil {
		return Reply{}, false, true, nil
	}
	if ctx.Done() != nil {
		stop := context.AfterFunc(ctx, s.cancel)
		defer func() {
			if !stop() {
				// The context ended: the stream is cancelled.
				usable = false
				if !ok {
					err = errs.Context(ctx.Err(), "cache")
				}
			}
		}()
	}
	s.out.Value = s.buf.Bytes()
	if err := s.stream.SendMsg(&s.out); err != nil {
		return Reply{}, false, false, nil
	}
	if err := s.stream.RecvMsg(&s.in); err != nil {
		return Reply{}, false, false, errInFlight // sent: it may have run
	}
	_, d, perr := parseReply(s.in.GetValue(), s.dec, &s.rd)
	if perr != nil {
		return Reply{}, false, false, errInFlight
	}
	if d.refused {
		return Reply{}, false, false, nil // it did not run
	}
	if d.err != nil {
		return Reply{}, false, false, errInFlight // it ran; its reply is unreadable
	}
	return d.r, d.ok, true, nil
}

// hostStream is a host's shared stream; any goroutine sends on it (sendMu
// orders the sends), one goroutine receives. mu guards the fields below
// it.
type hostStream struct {
	h      *host
	stream grpc.ClientStream
	cancel context.CancelFunc
	// inflight counts the frames sent and not yet answered.
	inflight atomic.Int64

	sendMu sync.Mutex
	enc    *msgpack.Encoder // guarded by sendMu
	buf    bytes.Buffer     // guarded by sendMu
	msg    wrapperspb.BytesValue

	mu      sync.Mutex
	next    uint64                      // guarded by mu
	waiting map[uint64]chan directReply // guarded by mu
	broken  error                       // guarded by mu
}

// receive hands each reply frame to its waiter until the stream breaks,
// then fails every waiter.
func (s *hostStream) receive() {
	in := new(wrapperspb.BytesValue)
	dec := msgpack.NewDecoder(nil)
	var rd bytes.Reader
	var err error
	for {
		if err = s.stream.RecvMsg(in); err != nil {
			break
		}
		var tag uint64
		var d directReply
		if tag, d, err = parseReply(in.GetValue(), dec, &rd); err != nil {
			break
		}
		s.mu.Lock()
		w := s.waiting[tag]
		delete(s.waiting, tag)
		s.mu.Unlock()
		if w != nil {
			s.inflight.Add(-1)
			w <- d
		}
	}
	s.fail(err)
}

// fail ends the stream with err: its waiters fail, and the host opens
// another for the next operations.
func (s *hostStream) fail(err error) {
	s.cancel()
	s.mu.Lock()
	if s.broken == nil {
		s.broken = fmt.Errorf("cache: stream to shard host %s broke: %w", s.h.key.addr, err)
	}
	waiting := s.waiting
	s.waiting = nil
	s.mu.Unlock()
	for _, w := range waiting {
		s.inflight.Add(-1)
		w <- directReply{err: s.broken}
	}
	s.h.mu.Lock()
	if s.h.shared == s {
		s.h.shared = nil
	}
	s.h.mu.Unlock()
}

// send sends req to incarnation inc of shard actor id; the channel gets
// the reply frame.
func (s *hostStream) send(id ids.ActorID, inc uint32, req Request) (chan directReply, error) {
	ch := make(chan directReply, 1)
	s.mu.Lock()
	if s.broken != nil {
		err := s.broken
		s.mu.Unlock()
		return nil, err
	}
	s.next++
	tag := s.next
	s.waiting[tag] = ch
	s.inflight.Add(1)
	s.mu.Unlock()

	s.sendMu.Lock()
	s.buf.Reset()
	err := appendFrame(&s.buf, s.enc, tag, id, inc, req)
	if err == nil {
		s.msg.Value = s.buf.Bytes()
		err = s.stream.SendMsg(&s.msg)
	}
	s.sendMu.Unlock()
	if err != nil {
		s.mu.Lock()
		if _, still := s.waiting[tag]; still {
			delete(s.waiting, tag)
			s.inflight.Add(-1)
		}
		s.mu.Unlock()
		go s.fail(err) // the receiver sees the break too; fail is idempotent
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

// locate is the host and incarnation of shard s as its handle knows them;
// nil when the data path is not usable now (the location unknown, or no
// connection to the host).
func locate(c *core.Core, s *shardRef) (*host, uint32) {
	addr, inc, ok := s.h.Location()
	if !ok {
		return nil, 0
	}
	h, err := hostFor(c, addr)
	if err != nil {
		return nil, 0
	}
	return h, inc
}

// doDirect runs req on shard s over the data path and waits: ok false
// when it could not (the operation then goes as an actor call); err is
// the context's.
func doDirect(ctx context.Context, c *core.Core, s *shardRef, req Request) (Reply, bool, error) {
	h, inc := locate(c, s)
	if h == nil {
		return Reply{}, false, nil
	}
	r, ok, err := h.roundTrip(ctx, s.h.ID, inc, req)
	return settleInFlight(s, req, r, ok, err)
}

// errInFlight is a data path stream that broke after an operation was sent
// and before its reply came (or whose reply did not decode): the shard may
// have run it.
var errInFlight = errors.New("cache: the stream to the shard's host broke with the operation in flight")

// settleInFlight decides what becomes of an operation whose stream broke
// in flight: one that is safe to run twice (a get, a set, a ping) goes as
// an actor call (ok false); any other fails, at most once, as an actor
// call in flight on a worker that died does, since running it again could
// apply it twice (an increment, a compare-and-swap).
func settleInFlight(s *shardRef, req Request, r Reply, ok bool, err error) (Reply, bool, error) {
	if !errors.Is(err, errInFlight) {
		return r, ok, err
	}
	switch req.Op {
	case OpGet, OpSet, OpStats, OpConfigure, OpPing, OpRenew:
		return Reply{}, false, nil
	}
	return Reply{}, true, errs.New(errs.KindWorkerCrashed, "", "cache: the stream to the shard's host broke after the operation (%s) was sent and before it answered: it may or may not have been applied, and is not run again; read the key to see", req.Op)
}

// sendDirect sends req to shard s on its host's shared stream; nil when the
// data path is not usable now: the operation goes as an actor call.
func sendDirect(c *core.Core, s *shardRef, req Request) *directCall {
	h, inc := locate(c, s)
	if h == nil {
		return nil
	}
	sh, err := h.sharedStream()
	if err != nil {
		return nil
	}
	ch, err := sh.send(s.h.ID, inc, req)
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
		if rep.err != nil && !rep.refused {
			return Reply{}, false, errInFlight // the stream broke after it was sent
		}
		if !rep.ok || rep.err != nil {
			return Reply{}, false, nil
		}
		dataPathReplies.Add(1)
		return rep.r, true, nil
	case <-ctx.Done():
		return Reply{}, false, errs.Context(ctx.Err(), "cache")
	}
}
