package embed

import (
	"context"
	"net"
	"sync"
	"time"

	"google.golang.org/grpc"

	"github.com/goray/goray/internal/raylet"
	pb "github.com/goray/goray/proto/goray/v1"
)

// nodeServices are the services a raylet registers (raylet.Register).
var nodeServices = []*grpc.ServiceDesc{
	&pb.NodeService_ServiceDesc,
	&pb.LeaseService_ServiceDesc,
	&pb.BundleService_ServiceDesc,
	&pb.LocalObjectService_ServiceDesc,
	&pb.ObjectTransferService_ServiceDesc,
	&pb.FileStoreService_ServiceDesc,
}

// headNode is the node of a head's process. Its services are served
// through a switch, so that when the head declares it dead (under load, or
// told so by a forged RegisterNode) it joins again as a new incarnation —
// a new raylet with a new node ID on the same address, its old workers
// stopped — as every other raylet does, without restarting the head that
// shares its process.
//
// Callers: Start (newHeadNode, set), the watch goroutine (swap), Node and
// Close (current). mu guards node.
type headNode struct {
	sw      *headSwitch
	cfg     raylet.Config
	srv     *grpc.Server
	lisAddr net.Addr

	mu   sync.Mutex
	node *raylet.Raylet // guarded by mu

	stop    chan struct{}
	done    chan struct{}
	started bool // watch runs (set before it starts)
	once    sync.Once
}

func newHeadNode(srv *grpc.Server, lisAddr net.Addr, cfg raylet.Config) *headNode {
	h := &headNode{sw: &headSwitch{leader: func() (string, bool) { return "", true }}, cfg: cfg, srv: srv, lisAddr: lisAddr,
		stop: make(chan struct{}), done: make(chan struct{})}
	for _, d := range nodeServices {
		h.sw.register(srv, d)
	}
	return h
}

// set makes n the node that serves.
func (h *headNode) set(n *raylet.Raylet) {
	reg := termRegistrar{}
	n.Register(reg)
	impls := map[string]any(reg)
	h.mu.Lock()
	h.node = n
	h.mu.Unlock()
	h.sw.impls.Store(&impls)
}

func (h *headNode) current() *raylet.Raylet {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.node
}

// watch replaces the node with a new incarnation each time the head
// declares it dead, until stopNode.
func (h *headNode) watch(log interface {
	Warn(string, ...any)
	Error(string, ...any)
}, listenAddr func() (n *raylet.Raylet, err error)) {
	defer close(h.done)
	for {
		old := h.current()
		select {
		case <-h.stop:
			return
		case <-old.Retired():
		}
		log.Warn("the head declared its own node dead: starting a new incarnation of it", "old_node", old.NodeID())
		old.StopWorkers()
		for wait := 200 * time.Millisecond; ; wait = min(2*wait, 2*time.Second) {
			n, err := listenAddr()
			if err == nil {
				h.set(n)
				ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
				err = n.Join(ctx)
				cancel()
				if err == nil {
					log.Warn("the head's node joined again as a new node", "node", n.NodeID(), "old_node", old.NodeID())
					break
				}
				n.Stop()
			}
			log.Error("start a new incarnation of the head's node; retrying", "err", err)
			select {
			case <-h.stop:
				old.Stop()
				return
			case <-time.After(wait):
			}
		}
		old.Stop()
	}
}

// start runs watch in a goroutine of its own; stopWatch ends it.
func (h *headNode) start(log interface {
	Warn(string, ...any)
	Error(string, ...any)
}) {
	h.started = true
	go h.watch(log, func() (*raylet.Raylet, error) {
		return raylet.New(h.cfg, h.lisAddr)
	})
}

// stopWatch ends watch and waits.
func (h *headNode) stopWatch() {
	h.once.Do(func() { close(h.stop) })
	if h.started {
		<-h.done
	}
}
