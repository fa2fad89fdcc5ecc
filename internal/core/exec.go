package core

import (
	"context"
	"sync"

	"github.com/goray/goray/internal/errs"
	pb "github.com/goray/goray/proto/goray/v1"
	"google.golang.org/grpc/status"
)

// callback receives a call's reply, or the error that ended its stream.
type callback func(*pb.ExecuteResponse, error)

// execStream is this process's one Execute stream to one worker. Calls sent
// on it start on the worker in the order they were sent. The submitters
// send from their goroutines (sendMu keeps one send at a time, so the order
// holds); its receive loop, owned by the Core's wait group, runs the
// callbacks. mu guards pending, nextID and err.
type execStream struct {
	addr   string
	cancel context.CancelFunc
	sendMu sync.Mutex
	stream pb.WorkerService_ExecuteClient

	mu      sync.Mutex
	pending map[uint64]callback // guarded by mu
	nextID  uint64              // guarded by mu
	err     error               // guarded by mu: set once the stream broke
}

// execPool holds this process's Execute streams, one per worker address; it
// is the submitters' taskPusher. Any goroutine calls it; mu guards m.
type execPool struct {
	c  *Core
	mu sync.Mutex
	m  map[string]*execStream // guarded by mu
}

// get returns the open stream to addr, opening one if needed.
func (p *execPool) get(addr string) (*execStream, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if s, ok := p.m[addr]; ok {
		return s, nil
	}
	cc, err := p.c.conns.get(addr)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancel(p.c.ctx)
	st, err := pb.NewWorkerServiceClient(cc).Execute(ctx)
	if err != nil {
		cancel()
		return nil, errs.New(errs.KindWorkerCrashed, "", "cannot reach the worker at %s: %s", addr, status.Convert(err).Message())
	}
	s := &execStream{addr: addr, cancel: cancel, stream: st, pending: map[uint64]callback{}}
	if p.m == nil {
		p.m = map[string]*execStream{}
	}
	p.m[addr] = s
	p.c.wg.Add(1)
	go func() {
		defer p.c.wg.Done()
		p.recvLoop(s)
	}()
	return s, nil
}

func (p *execPool) recvLoop(s *execStream) {
	for {
		resp, err := s.stream.Recv()
		if err != nil {
			p.mu.Lock()
			if p.m[s.addr] == s {
				delete(p.m, s.addr)
			}
			p.mu.Unlock()
			s.fail(errs.New(errs.KindWorkerCrashed, "", "the worker at %s went away while the call ran: %s", s.addr, status.Convert(err).Message()))
			s.cancel()
			return
		}
		s.mu.Lock()
		cb := s.pending[resp.GetCallId()]
		delete(s.pending, resp.GetCallId())
		s.mu.Unlock()
		if cb != nil {
			cb(resp, nil)
		}
	}
}

func (s *execStream) fail(err error) {
	s.mu.Lock()
	s.err = err
	pending := s.pending
	s.pending = map[uint64]callback{}
	s.mu.Unlock()
	for _, cb := range pending {
		cb(nil, err)
	}
}

// send sends one call; cb runs exactly once with its reply or error. It
// returns an error only when the call could not be sent (cb then never runs);
// otherwise the sent call, which its submitter may cancel.
func (s *execStream) send(task *pb.TaskSpec, cb callback) (sentCall, error) {
	id, err := s.sendReq(&pb.ExecuteRequest{Task: task}, cb)
	if err != nil {
		return nil, err
	}
	return streamCall{s, id}, nil
}

// sendReq sends req under a new call ID, and cb receives its reply.
func (s *execStream) sendReq(req *pb.ExecuteRequest, cb callback) (uint64, error) {
	s.sendMu.Lock()
	defer s.sendMu.Unlock()
	s.mu.Lock()
	if s.err != nil {
		err := s.err
		s.mu.Unlock()
		return 0, err
	}
	s.nextID++
	id := s.nextID
	s.pending[id] = cb
	s.mu.Unlock()
	req.CallId = id
	// A failed Send means the stream broke and the call never left this
	// process: unless the receive loop already failed it (its cb runs
	// there), take it back and say so, so that the caller knows it was
	// never delivered (an actor call then goes to the next incarnation
	// instead of failing as possibly run).
	if err := s.stream.Send(req); err != nil {
		s.mu.Lock()
		_, mine := s.pending[id]
		delete(s.pending, id)
		s.mu.Unlock()
		if mine {
			return 0, errs.New(errs.KindWorkerCrashed, "", "cannot reach the worker at %s: the stream to it broke (%v)", s.addr, err)
		}
	}
	return id, nil
}

// sentCall is a call a submitter pushed to a worker, which it may cancel.
type sentCall interface {
	// cancel asks the worker to cancel the call (see pb.CancelCall); acked,
	// if not nil, runs once when the worker has acted on it or the stream
	// broke.
	cancel(recursive, force bool, acked func())
}

// streamCall is a call sent on an Execute stream, by its call ID.
type streamCall struct {
	s  *execStream
	id uint64
}

func (c streamCall) cancel(recursive, force bool, acked func()) {
	req := &pb.ExecuteRequest{Cancel: &pb.CancelCall{TargetCallId: c.id, Recursive: recursive, Force: force}}
	_, err := c.s.sendReq(req, func(*pb.ExecuteResponse, error) {
		if acked != nil {
			acked()
		}
	})
	if err != nil && acked != nil {
		acked()
	}
}

func (p *execPool) closeAll() {
	p.mu.Lock()
	streams := p.m
	p.m = nil
	p.mu.Unlock()
	for _, s := range streams {
		s.cancel()
	}
}

// complete records a call's outcome in the entry of its return object.
func complete(e *objEntry, resp *pb.ExecuteResponse, err error) {
	if e.c != nil {
		defer e.c.settle(e, resp.GetContained())
	}
	if err != nil {
		e.setError(err)
		return
	}
	switch r := resp.GetResult().(type) {
	case *pb.ExecuteResponse_Value:
		e.setValue(r.Value)
	case *pb.ExecuteResponse_Stored:
		e.setLocation(r.Stored)
	case *pb.ExecuteResponse_Error:
		e.setError(errs.FromProto(r.Error))
	default:
		e.setError(errs.New(errs.KindTaskFailed, "", "the worker sent an empty reply"))
	}
}
