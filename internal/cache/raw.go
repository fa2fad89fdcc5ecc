package cache

import (
	"bytes"
	"context"
	"crypto/subtle"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/vmihailenco/msgpack/v5"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/types/known/emptypb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/goray/goray/internal/core"
	"github.com/goray/goray/internal/errs"
	"github.com/goray/goray/internal/ids"
	"github.com/goray/goray/internal/rpc"
)

// The raw synchronous path. A gRPC message costs goroutine hand-offs on
// both sides (the caller to gRPC's writer goroutine, the socket to its
// reader goroutine and back to the caller), which a ping-pong pays once
// per message and a synchronous cache operation, one frame each way,
// pays on every operation. So a shard host also serves the same frames on
// a plain TCP listener of its own, on the worker's host, which the client
// finds with the ShardData RawPort RPC (authenticated as every RPC is):
// one connection per synchronous caller at a time, each frame a 4-byte
// big-endian length and the frame, read and written by the caller's
// goroutine on the client and by one goroutine per connection on the
// host, which runs the frame (serveFrame) between its read and its reply.
//
// A connection starts with rawMagic, a 2-byte big-endian length and the
// cluster token; the host compares the token in constant time, answers
// one byte (rawAccepted) and serves frames, or closes the connection. A
// frame longer than rpc.MaxMessageSize closes its connection; the host
// goes on serving the others. Everything else is the gRPC stream's: "not
// here", a broken connection with the frame in flight (errInFlight, then
// settleInFlight), the context (a deadline on the connection), an idle
// pool per host. When the raw path is not there (a host that does not
// serve it, a dial or handshake that fails) the operation goes on the
// gRPC stream.

const (
	rawPortMethod = "/" + shardDataService + "/RawPort"
	rawMagic      = "gorayc1\n"
	rawAccepted   = 0x00
	// rawHandshakeTimeout bounds a new connection's handshake, both ends.
	rawHandshakeTimeout = 5 * time.Second
	// rawMaxToken bounds the token a client may present.
	rawMaxToken = 4096
	// rawMaxFrame bounds a frame, as the gRPC stream's messages are.
	rawMaxFrame = rpc.MaxMessageSize
)

// rawPortHandler serves RawPort: the port of this process's raw listener
// (started on the first call). Caller: a cache client. Callee: a shard
// host's worker server.
func rawPortHandler(srv any, ctx context.Context, dec func(any) error, interceptor grpc.UnaryServerInterceptor) (any, error) {
	in := new(emptypb.Empty)
	if err := dec(in); err != nil {
		return nil, err
	}
	f := func(ctx context.Context, _ any) (any, error) {
		s, err := rawServerFor(srv.(*core.Core))
		if err != nil {
			return nil, err
		}
		return wrapperspb.UInt32(uint32(s.port)), nil
	}
	if interceptor == nil {
		return f(ctx, in)
	}
	return interceptor(ctx, in, &grpc.UnaryServerInfo{Server: srv, FullMethod: rawPortMethod}, f)
}

// rawServer is a process's raw listener and its connections. The accept
// goroutine and one goroutine per connection run under the core (Core.Go);
// a closer goroutine closes the listener and every connection when the
// core shuts down. mu guards conns and closed.
type rawServer struct {
	c     *core.Core
	lis   net.Listener
	port  int
	token []byte

	mu     sync.Mutex
	conns  map[net.Conn]struct{} // guarded by mu
	closed bool                  // guarded by mu
}

var rawServers struct {
	mu sync.Mutex
	m  map[*core.Core]*rawServer
}

// rawServerFor is c's raw listener, started on the first call.
func rawServerFor(c *core.Core) (*rawServer, error) {
	rawServers.mu.Lock()
	defer rawServers.mu.Unlock()
	if s := rawServers.m[c]; s != nil {
		return s, nil
	}
	host, _, err := net.SplitHostPort(c.Address())
	if err != nil {
		return nil, fmt.Errorf("cache: the worker's address %q has no host: %w", c.Address(), err)
	}
	lis, err := net.Listen("tcp", net.JoinHostPort(host, "0"))
	if err != nil {
		return nil, fmt.Errorf("cache: listen for the raw data path: %w", err)
	}
	_, token, _, _ := c.Endpoints()
	s := &rawServer{c: c, lis: lis, port: lis.Addr().(*net.TCPAddr).Port, token: []byte(token), conns: map[net.Conn]struct{}{}}
	if !c.Go(s.accept) {
		lis.Close()
		return nil, errors.New("cache: the worker is shutting down")
	}
	if rawServers.m == nil {
		rawServers.m = map[*core.Core]*rawServer{}
	}
	rawServers.m[c] = s
	return s, nil
}

// accept serves each connection in a goroutine of its own until the core
// shuts down, then closes them all and waits for them.
func (s *rawServer) accept(ctx context.Context) {
	var wg sync.WaitGroup
	stop := context.AfterFunc(ctx, s.close)
	defer stop()
	for {
		conn, err := s.lis.Accept()
		if err != nil {
			break // closed (a transient accept error also ends it: clients fall back to the stream)
		}
		s.mu.Lock()
		if s.closed {
			s.mu.Unlock()
			conn.Close()
			break
		}
		s.conns[conn] = struct{}{}
		s.mu.Unlock()
		wg.Go(func() {
			s.serve(conn)
			s.mu.Lock()
			delete(s.conns, conn)
			s.mu.Unlock()
			conn.Close()
		})
	}
	s.close()
	wg.Wait()
	rawServers.mu.Lock()
	if rawServers.m[s.c] == s {
		delete(rawServers.m, s.c)
	}
	rawServers.mu.Unlock()
}

func (s *rawServer) close() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return
	}
	s.closed = true
	s.lis.Close()
	for conn := range s.conns {
		conn.Close()
	}
}

// serve checks a connection's token, then runs its frames in turn.
func (s *rawServer) serve(conn net.Conn) {
	if tc, ok := conn.(*net.TCPConn); ok {
		_ = tc.SetNoDelay(true)
	}
	_ = conn.SetReadDeadline(time.Now().Add(rawHandshakeTimeout))
	var hdr [len(rawMagic) + 2]byte
	if _, err := io.ReadFull(conn, hdr[:]); err != nil || string(hdr[:len(rawMagic)]) != rawMagic {
		return
	}
	n := int(binary.BigEndian.Uint16(hdr[len(rawMagic):]))
	if n > rawMaxToken {
		return
	}
	tok := make([]byte, n)
	if _, err := io.ReadFull(conn, tok); err != nil {
		return
	}
	if subtle.ConstantTimeCompare(tok, s.token) != 1 {
		return
	}
	_ = conn.SetReadDeadline(time.Time{})
	if _, err := conn.Write([]byte{rawAccepted}); err != nil {
		return
	}
	var in []byte
	var out bytes.Buffer
	enc := msgpack.NewEncoder(&out)
	dec := msgpack.NewDecoder(nil)
	var rd bytes.Reader
	var lenb [4]byte
	for {
		if _, err := io.ReadFull(conn, lenb[:]); err != nil {
			return
		}
		n := binary.BigEndian.Uint32(lenb[:])
		if n > rawMaxFrame {
			return // a frame too long to be one: the client is broken
		}
		if cap(in) < int(n) {
			in = make([]byte, n)
		}
		in = in[:n]
		if _, err := io.ReadFull(conn, in); err != nil {
			return
		}
		out.Reset()
		out.Write([]byte{0, 0, 0, 0})
		serveFrame(s.c, in, &out, enc, dec, &rd)
		b := out.Bytes()
		binary.BigEndian.PutUint32(b, uint32(len(b)-4))
		if _, err := conn.Write(b); err != nil {
			return
		}
		if cap(in) > 1<<20 {
			in = nil // a large value once: do not keep its buffer
		}
	}
}

// rawConn is a client's raw connection to a shard host, which one
// synchronous operation at a time uses.
type rawConn struct {
	conn     net.Conn
	deadline bool // a deadline is set on conn
	buf      bytes.Buffer
	enc      *msgpack.Encoder
	dec      *msgpack.Decoder
	rd       bytes.Reader
	in       []byte
}

// dialRaw opens a raw connection to addr and presents token.
func dialRaw(ctx context.Context, addr, token string) (*rawConn, error) {
	if len(token) > rawMaxToken {
		return nil, fmt.Errorf("cache: a cluster token of %d bytes is too long for the raw data path", len(token))
	}
	d := net.Dialer{Timeout: rawHandshakeTimeout}
	conn, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, err
	}
	if tc, ok := conn.(*net.TCPConn); ok {
		_ = tc.SetNoDelay(true)
	}
	_ = conn.SetDeadline(time.Now().Add(rawHandshakeTimeout))
	hello := make([]byte, 0, len(rawMagic)+2+len(token))
	hello = append(hello, rawMagic...)
	hello = binary.BigEndian.AppendUint16(hello, uint16(len(token)))
	hello = append(hello, token...)
	var ack [1]byte
	if _, err := conn.Write(hello); err == nil {
		_, err = io.ReadFull(conn, ack[:])
	}
	if err != nil || ack[0] != rawAccepted {
		conn.Close()
		if err == nil {
			err = errors.New("bad answer")
		}
		return nil, fmt.Errorf("cache: the shard host at %s refused the raw data path's handshake (a wrong cluster token?): %w", addr, err)
	}
	_ = conn.SetDeadline(time.Time{})
	rc := &rawConn{conn: conn, dec: msgpack.NewDecoder(nil)}
	rc.enc = msgpack.NewEncoder(&rc.buf)
	return rc, nil
}

// longAgo is a deadline in the past: it wakes a blocked read or write.
var longAgo = time.Unix(1, 0)

// roundTrip sends one frame and reads its reply, as syncStream.roundTrip
// does on a gRPC stream; usable says whether the connection can serve the
// next operation.
func (rc *rawConn) roundTrip(ctx context.Context, id ids.ActorID, inc uint32, req Request) (r Reply, ok, usable bool, err error) {
	rc.buf.Reset()
	rc.buf.Write([]byte{0, 0, 0, 0})
	if err := appendFrame(&rc.buf, rc.enc, 0, id, inc, req); err != nil {
		return Reply{}, false, true, nil
	}
	b := rc.buf.Bytes()
	if len(b)-4 > rawMaxFrame {
		return Reply{}, false, true, nil // too long for the data path: an actor call says why
	}
	binary.BigEndian.PutUint32(b, uint32(len(b)-4))
	if dl, has := ctx.Deadline(); has {
		_ = rc.conn.SetDeadline(dl)
		rc.deadline = true
	} else if rc.deadline {
		_ = rc.conn.SetDeadline(time.Time{})
		rc.deadline = false
	}
	if ctx.Done() != nil {
		stop := context.AfterFunc(ctx, func() { _ = rc.conn.SetDeadline(longAgo) })
		defer func() {
			if !stop() || ctx.Err() != nil {
				usable = false
				if !ok {
					err = errs.Context(ctx.Err(), "cache")
				}
			}
		}()
	}
	if _, err := rc.conn.Write(b); err != nil {
		// Not all of the frame went: the host runs only whole frames.
		return Reply{}, false, false, nil
	}
	var lenb [4]byte
	if _, err := io.ReadFull(rc.conn, lenb[:]); err != nil {
		return Reply{}, false, false, errInFlight // sent: it may have run
	}
	n := binary.BigEndian.Uint32(lenb[:])
	if n > rawMaxFrame {
		return Reply{}, false, false, errInFlight
	}
	if cap(rc.in) < int(n) {
		rc.in = make([]byte, n)
	}
	rc.in = rc.in[:n]
	if _, err := io.ReadFull(rc.conn, rc.in); err != nil {
		return Reply{}, false, false, errInFlight
	}
	_, d, perr := parseReply(rc.in, rc.dec, &rc.rd)
	if cap(rc.in) > 1<<20 {
		rc.in = nil
	}
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

// rawAddr is the address of h's raw listener, asked for once; "" when h
// does not serve the raw path.
func (h *host) rawAddr(ctx context.Context) string {
	h.rawOnce.Do(func() {
		ctx, cancel := context.WithTimeout(ctx, rawHandshakeTimeout)
		defer cancel()
		port := new(wrapperspb.UInt32Value)
		if err := h.cc.Invoke(ctx, rawPortMethod, &emptypb.Empty{}, port); err != nil {
			return
		}
		host, _, err := net.SplitHostPort(h.key.addr)
		if err != nil {
			return
		}
		// The idle connections close when this process's core shuts down.
		if !h.key.c.Go(func(ctx context.Context) {
			<-ctx.Done()
			h.closeRaw()
		}) {
			return
		}
		h.mu.Lock()
		h.raw = net.JoinHostPort(host, fmt.Sprint(port.GetValue()))
		h.mu.Unlock()
	})
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.raw
}

// rawRoundTrip runs req on the raw path: handled false when there is no
// raw path to h (the operation then goes on the gRPC stream).
func (h *host) rawRoundTrip(ctx context.Context, id ids.ActorID, inc uint32, req Request) (r Reply, ok bool, err error, handled bool) {
	if !rawOn.Load() {
		return Reply{}, false, nil, false
	}
	if ctx.Err() != nil {
		// Ended before it starts: not sent (a round trip could beat the
		// context's wake-up and answer).
		return Reply{}, false, errs.Context(ctx.Err(), "cache"), true
	}
	addr := h.rawAddr(ctx)
	if addr == "" {
		return Reply{}, false, nil, false
	}
	h.mu.Lock()
	var rc *rawConn
	if n := len(h.rawIdle); n > 0 {
		rc, h.rawIdle = h.rawIdle[n-1], h.rawIdle[:n-1]
	}
	h.mu.Unlock()
	if rc == nil {
		_, token, _, _ := h.key.c.Endpoints()
		var derr error
		if rc, derr = dialRaw(ctx, addr, token); derr != nil {
			return Reply{}, false, nil, false
		}
	}
	r, ok, usable, err := rc.roundTrip(ctx, id, inc, req)
	if ok {
		rawReplies.Add(1)
	}
	if usable {
		h.mu.Lock()
		if h.raw != "" && len(h.rawIdle) < maxIdleSync {
			h.rawIdle = append(h.rawIdle, rc)
			rc = nil
		}
		h.mu.Unlock()
	}
	if rc != nil {
		rc.conn.Close()
	}
	if errors.Is(err, errInFlight) {
		// The host closed a connection with a frame in flight: its raw
		// path goes unused from now on, the gRPC stream serves it.
		h.mu.Lock()
		h.raw = ""
		h.mu.Unlock()
	}
	return r, ok, err, true
}

// closeRaw closes h's idle raw connections and stops keeping new ones.
func (h *host) closeRaw() {
	h.mu.Lock()
	idle := h.rawIdle
	h.rawIdle, h.raw = nil, ""
	h.mu.Unlock()
	for _, rc := range idle {
		rc.conn.Close()
	}
}

// rawReplies counts the replies this process got on the raw path.
var rawReplies atomic.Uint64

// RawReplies is how many operations of this process were answered on the
// raw path (a subset of DataPathReplies).
func RawReplies() uint64 { return rawReplies.Load() }

// rawOn turns the raw path on. It is off by default: in `goray bench`
// (cache_get_sync against grpc_stream_pingpong_seq, two raylets) it
// measured slower than the gRPC stream (0.43 against 0.75 of the same-run
// ping-pong), although in this package's benchmark (one shard, the test
// cluster) it halves a Get's time; see docs/benchmarks.md.
var rawOn atomic.Bool

// SetRawPath turns the raw synchronous path on or off (the default), for
// tests and comparison in benchmarks; off, synchronous operations go on
// the gRPC stream.
func SetRawPath(on bool) { rawOn.Store(on) }
