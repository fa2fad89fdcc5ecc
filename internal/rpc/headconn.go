package rpc

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/connectivity"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	pb "github.com/goray/goray/proto/goray/v1"
)

// LeaderTrailer is the trailer in which a standby head names the leader
// when it refuses a call.
const LeaderTrailer = "goray-leader"

// SplitAddresses splits a comma-separated list of HOST:PORT addresses (the
// form GORAY_ADDRESS and --address take for a cluster of several heads),
// dropping empty entries and duplicates.
func SplitAddresses(list string) []string {
	var out []string
	for _, a := range strings.Split(list, ",") {
		if a = strings.TrimSpace(a); a != "" && !contains(out, a) {
			out = append(out, a)
		}
	}
	return out
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// HeadConn is a connection to the cluster's head that follows the leader
// among several heads (issue 13): it sends each call to the head it
// believes leads; a standby refuses a call with codes.Unavailable and the
// leader's address in LeaderTrailer, and the call is sent again there at
// once (a standby runs nothing, so this is safe for every call). A call
// that fails with Unavailable for another reason (the head died, an
// election is under way) returns its error, and the next call tries the
// next head: callers retry head calls as they do across a head restart.
//
// With one address it is a plain connection to that head.
type HeadConn struct {
	token string

	mu    sync.Mutex
	addrs []string                    // guarded by mu; the configured heads, then any leader named since
	conns map[string]*grpc.ClientConn // guarded by mu
	cur   int                         // guarded by mu; index into addrs of the head to call
}

var _ grpc.ClientConnInterface = (*HeadConn)(nil)

// DialHead returns a HeadConn to the heads in list (comma-separated
// HOST:PORT addresses). Like grpc.NewClient it does not connect yet.
func DialHead(list, token string) (*HeadConn, error) {
	addrs := SplitAddresses(list)
	if len(addrs) == 0 {
		return nil, fmt.Errorf("no head address in %q: want HOST:PORT, or several separated by commas", list)
	}
	return &HeadConn{token: token, addrs: addrs, conns: map[string]*grpc.ClientConn{}}, nil
}

// Addresses are the heads this connection knows, the configured ones first.
func (h *HeadConn) Addresses() []string {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]string(nil), h.addrs...)
}

// Target is the address calls go to now.
func (h *HeadConn) Target() string {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.addrs[h.cur]
}

// pick is the connection to the head to call: the current head's when
// its connection is up or may come up, else the next head's whose
// connection is up. A head whose connection failed is skipped without
// sending it anything, so that a call that is not safe to repeat is sent
// to a dead head only if every head is down (and then fails as not sent).
func (h *HeadConn) pick(ctx context.Context) (*grpc.ClientConn, string, error) {
	h.mu.Lock()
	n, start := len(h.addrs), h.cur
	h.mu.Unlock()
	var firstCC *grpc.ClientConn
	var firstAddr string
	for i := range n {
		h.mu.Lock()
		addr := h.addrs[(start+i)%len(h.addrs)]
		cc := h.conns[addr]
		if cc == nil {
			var err error
			if cc, err = Dial(addr, h.token); err != nil {
				h.mu.Unlock()
				return nil, addr, err
			}
			h.conns[addr] = cc
		}
		h.mu.Unlock()
		if firstCC == nil {
			firstCC, firstAddr = cc, addr
		}
		if n == 1 || connUsable(ctx, cc) {
			if i > 0 {
				h.mu.Lock()
				if h.cur == start {
					h.cur = (start + i) % len(h.addrs)
				}
				h.mu.Unlock()
			}
			return cc, addr, nil
		}
	}
	return firstCC, firstAddr, nil
}

// connWait bounds how long pick waits for a connection that is coming up.
const connWait = 500 * time.Millisecond

// connUsable reports whether cc is up, connecting it and waiting up to
// connWait when it is idle or connecting.
func connUsable(ctx context.Context, cc *grpc.ClientConn) bool {
	ctx, cancel := context.WithTimeout(ctx, connWait)
	defer cancel()
	for {
		switch st := cc.GetState(); st {
		case connectivity.Ready:
			return true
		case connectivity.TransientFailure, connectivity.Shutdown:
			cc.Connect() // try again in the background for later calls
			return false
		case connectivity.Idle:
			cc.Connect()
			fallthrough
		default:
			if !cc.WaitForStateChange(ctx, st) {
				return false
			}
		}
	}
}

// redirect makes the next calls go to leader (named by a standby at from),
// or, with no leader named, to the head after from.
func (h *HeadConn) redirect(from, leader string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.addrs[h.cur] != from {
		return // another call moved on already
	}
	if leader != "" {
		for i, a := range h.addrs {
			if a == leader {
				h.cur = i
				return
			}
		}
		h.addrs = append(h.addrs, leader)
		h.cur = len(h.addrs) - 1
		return
	}
	h.cur = (h.cur + 1) % len(h.addrs)
}

// HeadUnreachable reports whether err says the head could not be reached or
// does not lead (codes.Unavailable from the transport or a standby), as
// opposed to an Unavailable that a head chose to answer with one of goray's
// error kinds (an actor or node that died, a head shutting down): only the
// first moves a HeadConn to another head or is worth repeating a call for.
func HeadUnreachable(err error) bool {
	st, ok := status.FromError(err)
	if !ok || st.Code() != codes.Unavailable {
		return false
	}
	for _, d := range st.Details() {
		if info, ok := d.(*pb.ErrorInfo); ok && info.GetKind() != pb.ErrorKind_ERROR_KIND_UNAVAILABLE {
			return false
		}
	}
	return true
}

// leaderOf is the leader a refusal names ("" none), and whether err is a
// refusal by a head that did not run the call.
func leaderOf(err error, md metadata.MD) (string, bool) {
	if !HeadUnreachable(err) {
		return "", false
	}
	if v := md.Get(LeaderTrailer); len(v) > 0 && v[0] != "" {
		return v[0], true
	}
	return "", false
}

// Invoke sends a unary call to the leader, following a standby's
// redirection up to once per known head.
func (h *HeadConn) Invoke(ctx context.Context, method string, args, reply any, opts ...grpc.CallOption) error {
	var err error
	for range len(h.Addresses()) + 1 {
		var cc *grpc.ClientConn
		var addr string
		if cc, addr, err = h.pick(ctx); err != nil {
			return err
		}
		var md metadata.MD
		err = cc.Invoke(ctx, method, args, reply, append(opts, grpc.Trailer(&md))...)
		if err == nil {
			return nil
		}
		leader, refused := leaderOf(err, md)
		if HeadUnreachable(err) || status.Code(err) == codes.DeadlineExceeded {
			// A head that did not answer in time may be paused or cut
			// off: the next call tries another (which sends it back to
			// this one if it still leads).
			h.redirect(addr, leader)
		}
		if !refused || ctx.Err() != nil {
			return err
		}
	}
	return err
}

// NewStream opens a stream on the head it believes leads. A standby's
// refusal arrives with the stream's first receive (or Header); the stream
// then records the leader it names, and the caller opens the stream again,
// as after any broken stream, which goes to that leader.
func (h *HeadConn) NewStream(ctx context.Context, desc *grpc.StreamDesc, method string, opts ...grpc.CallOption) (grpc.ClientStream, error) {
	cc, addr, err := h.pick(ctx)
	if err != nil {
		return nil, err
	}
	st, err := cc.NewStream(ctx, desc, method, opts...)
	if err != nil {
		if HeadUnreachable(err) {
			h.redirect(addr, "")
		}
		return nil, err
	}
	return &headStream{ClientStream: st, h: h, addr: addr}, nil
}

// headStream notes a standby's refusal or a dead head on its stream's
// errors, so that the next stream goes to the leader.
type headStream struct {
	grpc.ClientStream
	h    *HeadConn
	addr string
}

func (s *headStream) RecvMsg(m any) error {
	err := s.ClientStream.RecvMsg(m)
	s.note(err)
	return err
}

func (s *headStream) Header() (metadata.MD, error) {
	md, err := s.ClientStream.Header()
	s.note(err)
	return md, err
}

func (s *headStream) note(err error) {
	if err == nil || !HeadUnreachable(err) {
		return
	}
	leader, _ := leaderOf(err, s.ClientStream.Trailer())
	s.h.redirect(s.addr, leader)
}

// Close closes every connection.
func (h *HeadConn) Close() error {
	h.mu.Lock()
	defer h.mu.Unlock()
	var errs []error
	for a, cc := range h.conns {
		errs = append(errs, cc.Close())
		delete(h.conns, a)
	}
	return errors.Join(errs...)
}
