package core

import (
	"context"
	"sync"

	"google.golang.org/grpc"

	"github.com/goray/goray/internal/ids"
)

// ServiceFunc registers one more gRPC service on a process's worker server,
// beside WorkerService: the service reaches the process's core through c.
type ServiceFunc func(c *Core, s grpc.ServiceRegistrar)

var services struct {
	mu sync.Mutex
	fn []ServiceFunc
}

// RegisterService adds a service to every worker server this process
// starts from now on (the layers above core, e.g. internal/cache, add the
// data paths of their actors this way without core importing them). Call
// it at package level (init): a server started before misses it. The
// server's cluster-token interceptors apply to the service as to
// WorkerService.
func RegisterService(f ServiceFunc) {
	services.mu.Lock()
	defer services.mu.Unlock()
	services.fn = append(services.fn, f)
}

func registerServices(c *Core, s grpc.ServiceRegistrar) {
	services.mu.Lock()
	fns := append([]ServiceFunc(nil), services.fn...)
	services.mu.Unlock()
	for _, f := range fns {
		f(c, s)
	}
}

// LocalActor is the object of actor id's incarnation when this process
// hosts that incarnation and it is not killed (ok false otherwise). A
// service registered with RegisterService serves an actor's data path
// with it; it calls the object outside the actor's mailbox, so the
// object's methods must lock what they share.
func (c *Core) LocalActor(id ids.ActorID, incarnation uint32) (obj any, ok bool) {
	h := c.host
	h.mu.Lock()
	a, found := h.actors[id]
	h.mu.Unlock()
	if !found || a.incarnation != incarnation {
		return nil, false
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.killed {
		return nil, false
	}
	return a.obj, true
}

// Location is where the handle's actor last ran as this process knows it:
// its worker's address and incarnation (ok false when it is dead or not yet
// placed). It may be stale: the actor may have moved since.
func (h *ActorHandle) Location() (addr string, incarnation uint32, ok bool) {
	r := h.route
	if r == nil {
		return "", 0, false
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.dead != nil || r.addr == "" {
		return "", 0, false
	}
	return r.addr, r.incarnation, true
}

// Conn is this process's (pooled, authenticated) connection to the worker
// or raylet at addr. Shutdown closes it.
func (c *Core) Conn(addr string) (grpc.ClientConnInterface, error) {
	return c.conns.get(addr)
}

// Go runs f in a goroutine this core owns: f's ctx ends when the core shuts
// down, and Shutdown waits for f to return. A service registered with
// RegisterService starts what it serves beside the worker server this
// way (e.g. a listener of its own). After Shutdown has begun f does not
// run and Go reports false.
func (c *Core) Go(f func(ctx context.Context)) bool {
	c.goMu.Lock()
	defer c.goMu.Unlock()
	if c.ctx.Err() != nil {
		return false
	}
	c.wg.Add(1)
	go func() {
		defer c.wg.Done()
		f(c.ctx)
	}()
	return true
}
