package raylet

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net"
	"os"
	"path/filepath"
	"sync"
	"time"

	"golang.org/x/sync/singleflight"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/goray/goray/internal/errs"
	"github.com/goray/goray/internal/files"
	"github.com/goray/goray/internal/ids"
	"github.com/goray/goray/internal/rpc"
	"github.com/goray/goray/internal/sched"
	"github.com/goray/goray/internal/store"
	pb "github.com/goray/goray/proto/goray/v1"
)

// Timeouts.
const (
	joinTimeout     = 5 * time.Second  // first RegisterNode against the head
	headCallTimeout = 10 * time.Second // any later unary call to the head
	// multiHeadHeartbeatTimeout bounds a heartbeat when the raylet knows
	// several heads (rpc.HeadConn moves on after it).
	multiHeadHeartbeatTimeout = 3 * time.Second
	registerTimeout           = 60 * time.Second // a started worker must register within it
	gracefulTimeout           = 2 * time.Second  // GracefulStop before a hard Stop
	killWaitTimeout           = 10 * time.Second // waiting for killed workers to exit
	defaultHeartbeat          = time.Second
	// maxHeartbeatBackoff bounds the wait between failed heartbeats (at
	// least the heartbeat interval): well under a head's node timeout, so a
	// raylet is back within it once a restarted head answers.
	maxHeartbeatBackoff = 2 * time.Second
	binaryFetchBudget   = 10 * time.Minute
	pullBudget          = 30 * time.Minute
)

// Raylet is one running node manager: the composition that wires its
// managers — the worker pool (workerPool), the lease manager (leaseManager:
// resources, lease requests, spillback, infeasible requests), the bundle
// manager (bundleManager), the cluster view (clusterView), the local object
// table (localObjects) and transfer (transfer) — and serves NodeService and
// ObjectTransferService over them, registers with the head and heartbeats
// it. Each manager owns its state behind its own lock; the lock order is
// bundleManager, then workerPool, then leaseManager, then clusterView
// (localObjects and transfer call no other manager). The Raylet itself
// keeps only its configuration, its connection to the head and lifeMu.
type Raylet struct {
	cfg         Config
	log         *slog.Logger
	nodeID      ids.NodeID
	token       string
	tokenFile   string
	addr        string
	headAddr    string
	dataDir     string
	storeDir    string
	spillDir    string // the raylet's own, removed on Stop
	ownDataDir  bool
	ownStoreDir bool

	// lis and srv are the raylet's own listener and server (Start); nil
	// when another package serves it (New).
	lis net.Listener
	srv *grpc.Server
	// retired is closed when the head declared this node dead: this
	// incarnation is over (Run starts a new one).
	retired    chan struct{}
	retireOnce sync.Once
	headConn   *rpc.HeadConn
	// epochs fences the commands of a deposed head (rpc.EpochFence).
	epochs rpc.EpochFence
	head   *rpc.HeadClient

	// ctx lives from Start to Stop; background work runs under it.
	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup // every goroutine the raylet starts

	binFlight singleflight.Group // job binary fetches, by sha hex
	jobFlight singleflight.Group // GetJob + binary, by job ID
	// viewRefresh: refreshes of the cluster view asked for by pulls from
	// a node the view does not have (knownPeer), one at a time.
	viewRefresh singleflight.Group

	stopOnce    sync.Once
	workersOnce sync.Once
	// lifeMu guards stopping (goTracked starts no goroutine once it is set)
	// and hbFail (the last heartbeat failed). Nothing else is called with it
	// held.
	lifeMu   sync.Mutex
	stopping bool
	hbFail   bool
	// arena is the node's shared-memory arena; nil without one.
	arena  *store.Allocator
	hbKick chan struct{} // asks the heartbeat loop for a heartbeat now

	// The managers, each owning its state behind its own lock (see their
	// doc comments for the lock order): set by New, before any RPC is
	// served.
	view     *clusterView
	leases   *leaseManager
	bundles  *bundleManager
	pool     *workerPool
	monitor  *memoryMonitor
	transfer *transfer // set by makeDirs, with objects
	// reaper removes the directories the raylet made if it dies without
	// Stop (nil when it could not be started: then the next raylet's Sweep
	// removes them).
	reaper *store.Reaper

	outMu sync.Mutex // serializes worker output lines

	// objects is the node's local object table, with its own lock (set by
	// makeDirs, before any RPC is served).
	objects *localObjects
	// files serves the node's file replicas (package internal/files), under
	// DataDir/files (set by makeDirs).
	files *files.Server
}

// Start starts a standalone raylet: it listens on cfg.Listen, serves its
// own gRPC server, registers with the head at cfg.Address and returns when
// the node is registered. Stop stops it.
func Start(ctx context.Context, cfg Config) (_ *Raylet, err error) {
	if cfg.Address == "" {
		return nil, errors.New("raylet config: --address HOST:PORT of a head is required (or run `raylet --head`)")
	}
	lis, err := net.Listen("tcp", cfg.withDefaults().Listen)
	if err != nil {
		return nil, fmt.Errorf("raylet: listen on %s: %w", cfg.withDefaults().Listen, err)
	}
	r, err := New(cfg, lis.Addr())
	if err != nil {
		lis.Close()
		return nil, err
	}
	r.lis = lis
	r.srv = grpc.NewServer(ServerOptions(r.token)...)
	r.Register(r.srv)
	r.wg.Go(func() {
		if err := r.srv.Serve(r.lis); err != nil && !errors.Is(err, grpc.ErrServerStopped) {
			r.log.Error("gRPC server stopped", "err", err)
		}
	})
	if err := r.Join(ctx); err != nil {
		r.Stop()
		return nil, err
	}
	return r, nil
}

// ServerOptions are the options of a gRPC server that serves a raylet: the
// cluster's authentication and the codec that sends object chunks without
// a protobuf copy (ordinary protobuf for every other message).
// bulkWindow is the raylet server's flow-control window per stream (twice
// that per connection): a put streamed to it is not held to gRPC's
// estimate of the bandwidth-delay product, which on loopback stays small
// and makes the sender wait on the raylet's every few chunks. It bounds
// what one stream buffers when its handler does not read.
const bulkWindow = 16 << 20

func ServerOptions(token string) []grpc.ServerOption {
	return append(rpc.ServerOptions(token), grpc.ForceServerCodecV2(transferServerCodec{}),
		grpc.InitialWindowSize(bulkWindow), grpc.InitialConnWindowSize(2*bulkWindow))
}

// New makes a raylet that will be reached at addr (its listener's address;
// an unspecified host is advertised as the machine's first interface
// address), without serving or joining: register its services on a server
// (Register), serve it, then Join. Package internal/embed does so to put a
// head and its node on one port; Start does all of it for a standalone node.
// Stop releases what New made.
func New(cfg Config, addr net.Addr) (_ *Raylet, err error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg = cfg.withDefaults()
	r := &Raylet{
		cfg:     cfg,
		nodeID:  ids.NewNodeID(),
		hbKick:  make(chan struct{}, 1),
		retired: make(chan struct{}),
	}
	r.log = cfg.Logger.With("component", "raylet", "node", r.nodeID.String()[:8])
	r.ctx, r.cancel = context.WithCancel(context.Background())
	r.view = newClusterView()
	r.leases = newLeaseManager(r.nodeID, sched.Resources(cfg.Resources), r.view, r.ctx.Done())
	r.bundles = newBundleManager(r.nodeID, r.leases, r.kickHeartbeat)
	r.pool = newWorkerPool(r.nodeID, "", cfg.MaxWorkersPerJob, r.leases, r, r.ctx.Done())
	r.monitor = newMemoryMonitor(r.nodeID, cfg, newProcMemory("/proc", "/sys/fs/cgroup"), r.pool, r.log)
	defer func() {
		if err != nil {
			r.Stop()
		}
	}()
	tcp, ok := addr.(*net.TCPAddr)
	if !ok {
		return nil, fmt.Errorf("raylet: listener address %v is not TCP", addr)
	}
	r.addr = rpc.AdvertiseAddr(tcp)
	r.headAddr = cfg.Address
	if cfg.NoAuth {
		if !cfg.HeadNode { // the head has warned already
			r.log.Warn("!!! AUTHENTICATION IS DISABLED (--no-auth): any process that can reach this raylet can run code on it; use only on a trusted loopback setup !!!")
		}
	} else if r.token, r.tokenFile, err = joinToken(cfg); err != nil {
		return nil, err
	}
	r.pool.token = r.token
	if r.headAddr != "" {
		// Made now, not at Join: the node's services are served before it
		// joins, and a request that reaches them early (a lease spilled
		// back to an earlier node at this address) may ask the head.
		if r.headConn, err = rpc.DialHead(r.headAddr, r.token); err != nil {
			return nil, err
		}
		r.head = rpc.NewHeadClient(r.headConn)
	}
	if err := r.makeDirs(); err != nil {
		return nil, err
	}
	if r.monitor.enabled() {
		r.wg.Go(func() { r.monitor.run(r.ctx) })
	}
	return r, nil
}

// Register registers the raylet's services (NodeService and
// ObjectTransferService) on srv, which must be made with ServerOptions.
func (r *Raylet) Register(srv grpc.ServiceRegistrar) {
	ns := &nodeServer{r: r}
	pb.RegisterNodeServiceServer(srv, ns)
	pb.RegisterLeaseServiceServer(srv, ns)
	pb.RegisterBundleServiceServer(srv, ns)
	pb.RegisterLocalObjectServiceServer(srv, ns)
	pb.RegisterObjectTransferServiceServer(srv, &transferServer{r: r})
	pb.RegisterFileStoreServiceServer(srv, r.files)
}

// Join registers the node with the head at Config.Address, failing fast
// when nobody answers, and starts heartbeating. The raylet's services must
// be served by then: the head calls them.
func (r *Raylet) Join(ctx context.Context) error {
	if r.headAddr == "" {
		return errors.New("raylet: no head address to join (Config.Address)")
	}
	if r.headConn == nil {
		var err error
		if r.headConn, err = rpc.DialHead(r.headAddr, r.token); err != nil {
			return err
		}
		r.head = rpc.NewHeadClient(r.headConn)
	}
	interval, err := r.join(ctx)
	if err != nil {
		return err
	}
	_, _ = r.heartbeat(ctx)
	r.files.SetIndex(r.headConn)
	if err := r.files.Reconcile(ctx); err != nil {
		r.log.Warn("could not reconcile the file replicas on disk with the head's index", "err", err)
	}
	r.wg.Go(func() { r.heartbeatLoop(interval) })
	r.log.Info("raylet ready", "address", r.addr, "head", r.headAddr, "is_head", r.cfg.HeadNode,
		"resources", r.registerRequest().GetTotal().GetAmounts(), "store_dir", r.storeDir, "data_dir", r.dataDir)
	return nil
}

// joinToken finds the token of the cluster a raylet joins.
func joinToken(cfg Config) (token, file string, err error) {
	if cfg.Token != "" {
		return cfg.Token, cfg.TokenFile, nil
	}
	switch {
	case cfg.TokenFile != "":
		file = cfg.TokenFile
	case os.Getenv(EnvToken) != "":
		return os.Getenv(EnvToken), "", nil
	case os.Getenv(EnvTokenFile) != "":
		file = os.Getenv(EnvTokenFile)
	default:
		file = rpc.DefaultTokenPath(cfg.Address)
	}
	token, err = rpc.ReadTokenFile(file)
	if err != nil {
		return "", "", fmt.Errorf("raylet: no cluster token for head %s: %w (pass --token-file with the file `raylet --head` wrote, or set %s)", cfg.Address, err, EnvToken)
	}
	return token, file, nil
}

func (r *Raylet) makeDirs() error {
	if r.cfg.DataDir != "" {
		r.dataDir = r.cfg.DataDir
		if err := os.MkdirAll(r.dataDir, 0o700); err != nil {
			return fmt.Errorf("raylet: data dir: %w", err)
		}
	} else {
		base, err := rpc.MakeRuntimeDir()
		if err != nil {
			return fmt.Errorf("raylet: data dir: %w", err)
		}
		// Directories left by raylets that were killed before they could
		// remove their own go first.
		for _, d := range store.Sweep(base, "raylet-") {
			r.log.Info("removed the data dir of a raylet that is gone", "dir", d)
		}
		d, err := os.MkdirTemp(base, "raylet-")
		if err != nil {
			return fmt.Errorf("raylet: data dir: %w", err)
		}
		if err := store.Claim(d); err != nil {
			return fmt.Errorf("raylet: data dir: %w", err)
		}
		r.dataDir, r.ownDataDir = d, true
	}
	if err := os.MkdirAll(filepath.Join(r.dataDir, "jobs"), 0o700); err != nil {
		return fmt.Errorf("raylet: data dir: %w", err)
	}
	if r.cfg.StoreDir != "" {
		r.storeDir = r.cfg.StoreDir
		if err := os.MkdirAll(r.storeDir, 0o700); err != nil {
			return fmt.Errorf("raylet: store dir: %w", err)
		}
	} else {
		base := store.BaseDir(r.dataDir)
		if err := os.MkdirAll(base, 0o700); err != nil {
			return fmt.Errorf("raylet: store dir: %w", err)
		}
		for _, d := range store.Sweep(base, "store-") {
			r.log.Info("removed the object store of a raylet that is gone", "dir", d)
		}
		d, err := os.MkdirTemp(base, "store-")
		if err != nil {
			return fmt.Errorf("raylet: store dir: %w", err)
		}
		if err := store.Claim(d); err != nil {
			return fmt.Errorf("raylet: store dir: %w", err)
		}
		r.storeDir, r.ownStoreDir = d, true
	}
	if n := r.cfg.ObjectStoreMemory; n > 0 {
		a, err := store.CreateArena(r.storeDir, uint64(n))
		if err != nil {
			r.log.Warn("no shared-memory arena: objects go to files of their own", "err", err)
		} else {
			r.arena = a
			if r.cfg.ObjectStorePrefault {
				r.wg.Go(func() {
					if err := a.Prefault(r.ctx); err != nil {
						r.log.Warn("prefault the object store arena", "err", err)
					}
				})
			}
		}
	}
	if err := r.makeSpillDir(); err != nil {
		return err
	}
	r.startReaper()
	r.objects = newLocalObjects(r.storeDir, r.arena, r.spillDir, r.cfg.ObjectSpillingThreshold, r.log)
	if r.arena != nil {
		r.wg.Go(func() { r.objects.spillLoop(r.ctx.Done()) })
	}
	r.transfer = newTransfer(r.nodeID, r.token, r.storeDir, r.objects, r.log)
	r.transfer.known = r.knownPeer
	r.transfer.unreachable = func(node []byte, addr string) {
		if r.ctx.Err() == nil {
			r.wg.Go(func() { r.reportUnreachable(node, addr) })
		}
	}
	disk, err := files.OpenDisk(r.dataDir)
	if err != nil {
		return fmt.Errorf("raylet: %w", err)
	}
	r.files = files.NewServer(disk, r.nodeID[:], r.addr, r.token, r.log)
	r.files.SetKnownPeer(r.knownPeer)
	return nil
}

// makeSpillDir makes the raylet's own spill directory, spill-*, in
// ObjectSpillingDir (default: the data directory), after removing those of
// raylets that are gone. Stop removes it.
func (r *Raylet) makeSpillDir() error {
	base := r.cfg.ObjectSpillingDir
	if base == "" {
		base = r.dataDir
	}
	if err := os.MkdirAll(base, 0o700); err != nil {
		return fmt.Errorf("raylet: object spilling dir: %w", err)
	}
	for _, d := range store.Sweep(base, "spill-") {
		r.log.Info("removed the spilled objects of a raylet that is gone", "dir", d)
	}
	d, err := os.MkdirTemp(base, "spill-")
	if err != nil {
		return fmt.Errorf("raylet: object spilling dir: %w", err)
	}
	if err := store.Claim(d); err != nil {
		os.Remove(d)
		return fmt.Errorf("raylet: object spilling dir: %w", err)
	}
	r.spillDir = d
	return nil
}

// startReaper starts the process that removes the directories the raylet
// made (not those it was given: a raylet restarted on them must keep them)
// when the raylet dies without Stop, SIGKILL included.
func (r *Raylet) startReaper() {
	var owned []string
	if r.ownDataDir {
		owned = append(owned, r.dataDir)
	}
	if r.ownStoreDir {
		owned = append(owned, r.storeDir)
	}
	if r.spillDir != "" {
		owned = append(owned, r.spillDir) // its own spill-* directory
	}
	if len(owned) == 0 {
		return
	}
	rp, err := store.StartReaper(owned...)
	if err != nil {
		r.log.Warn("no reaper: if this raylet is killed, its directories stay until the next raylet starts", "err", err)
		return
	}
	r.reaper = rp
}

// join registers the node with the head, failing fast when nobody answers.
func (r *Raylet) join(ctx context.Context) (time.Duration, error) {
	ctx, cancel := context.WithTimeout(ctx, joinTimeout)
	defer cancel()
	resp, err := r.head.RegisterNode(ctx, r.registerRequest(), grpc.WaitForReady(false))
	// A cluster of several heads may be electing its leader: wait for it
	// (within joinTimeout) rather than fail. (A head's own node waits too:
	// its head may be a standby while the cluster elects.)
	for wait := 100 * time.Millisecond; err != nil && rpc.HeadUnreachable(err) && (len(rpc.SplitAddresses(r.headAddr)) > 1 || r.cfg.HeadNode); wait = min(2*wait, time.Second) {
		select {
		case <-ctx.Done():
		case <-time.After(wait):
			resp, err = r.head.RegisterNode(ctx, r.registerRequest(), grpc.WaitForReady(false))
			continue
		}
		break
	}
	if err != nil {
		switch status.Code(err) {
		case codes.Unauthenticated:
			return 0, fmt.Errorf("raylet: the goray head at %s rejected this node's cluster token (use the token file written by `raylet --head`): %w", r.headAddr, err)
		case codes.Unavailable, codes.DeadlineExceeded:
			return 0, fmt.Errorf("raylet: no goray head answers at %s (is `raylet --head` running there?): %w", r.headAddr, err)
		case codes.Unimplemented:
			return 0, fmt.Errorf("raylet: the server at %s is not a goray head: %w", r.headAddr, err)
		}
		return 0, fmt.Errorf("raylet: register with the goray head at %s: %w", r.headAddr, errs.FromStatus(err))
	}
	return heartbeatInterval(resp), nil
}

func heartbeatInterval(resp *pb.RegisterNodeResponse) time.Duration {
	if ms := resp.GetHeartbeatIntervalMs(); ms > 0 {
		return time.Duration(ms) * time.Millisecond
	}
	return defaultHeartbeat
}

func (r *Raylet) registerRequest() *pb.RegisterNodeRequest {
	total, _ := r.leases.resources()
	return &pb.RegisterNodeRequest{NodeId: r.nodeID[:], Address: r.addr, Total: &pb.Resources{Amounts: total}, IsHead: r.cfg.HeadNode}
}

// heartbeatLoop heartbeats every interval until Stop. Failures (the head is
// down or restarting) never stop it: it retries with a backoff bounded by
// max(interval, maxHeartbeatBackoff).
func (r *Raylet) heartbeatLoop(interval time.Duration) {
	t := time.NewTimer(interval)
	defer t.Stop()
	wait := interval
	for {
		select {
		case <-r.ctx.Done():
			return
		case <-t.C:
		case <-r.hbKick:
		}
		iv, ok := r.heartbeat(r.ctx)
		if iv > 0 {
			interval = iv
		}
		if ok {
			wait = interval
		} else {
			wait = min(2*wait, max(interval, maxHeartbeatBackoff))
		}
		// ±20% jitter, so raylets do not hit a restarted head in lockstep.
		t.Reset(time.Duration(float64(wait) * (0.8 + 0.4*rand.Float64())))
	}
}

// Retired is closed when the head declared this node dead (it missed its
// heartbeat deadline) and refused it back: its actors were declared dead,
// so this incarnation must end; Run then starts a new raylet, with a new
// node ID, on the same address.
func (r *Raylet) Retired() <-chan struct{} { return r.retired }

// retire ends this incarnation: its workers are killed at once (their
// actors are dead in the head's table) and Retired is closed.
func (r *Raylet) retire(cause error) {
	r.retireOnce.Do(func() {
		r.log.Warn("the head declared this node dead: killing its workers; a new incarnation must join", "err", cause)
		for _, w := range r.pool.all(false) {
			w.kill()
		}
		close(r.retired)
	})
}

// heartbeat sends one heartbeat and acts on the reply. It returns a new
// heartbeat interval when it had to register again, else 0, and whether
// the head answered.
func (r *Raylet) heartbeat(ctx context.Context) (time.Duration, bool) {
	timeout := headCallTimeout
	if len(r.headConn.Addresses()) > 1 {
		// Several heads: a leader that stopped answering (paused, cut off)
		// is left for the next head well within the node timeout.
		timeout = multiHeadHeartbeatTimeout
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	var hdr metadata.MD
	resp, err := r.head.Heartbeat(ctx, r.heartbeatRequest(), grpc.Header(&hdr))
	r.epochs.Observe(rpc.EpochOf(hdr))
	r.lifeMu.Lock()
	wasFailing := r.hbFail
	r.hbFail = err != nil
	r.lifeMu.Unlock()
	if err == nil {
		r.view.set(resp.GetNodes())
	}
	if err != nil {
		if !wasFailing && r.ctx.Err() == nil {
			r.log.Warn("heartbeat to head failed; retrying until it answers", "head", r.headAddr, "err", err)
		}
		return 0, false
	}
	if wasFailing {
		r.log.Info("heartbeat to head recovered", "head", r.headAddr)
	}
	for _, b := range resp.GetFinishedJobIds() {
		id, err := ids.ParseJobID(b)
		if err != nil {
			r.log.Warn("head sent a malformed finished job ID", "err", err)
			continue
		}
		r.finishJobAsync(id)
	}
	if resp.GetReregister() {
		// The head does not know this node (it lost its tables) or holds it
		// for dead. Register again under the same ID: this incarnation never
		// died. A head that declared it dead refuses, and it retires.
		r.log.Info("head asked this node to register again", "head", r.headAddr)
		rr, err := r.head.RegisterNode(ctx, r.registerRequest())
		if errors.Is(errs.FromStatus(err), errs.ErrNodeDied) {
			r.retire(errs.FromStatus(err))
			return 0, true
		}
		if err != nil {
			r.log.Warn("register again with head failed", "err", errs.FromStatus(err))
			return 0, true
		}
		// Report the node's current state at once.
		r.kickHeartbeat()
		return heartbeatInterval(rr), true
	}
	return 0, true
}

// heartbeatRequest is the node's heartbeat: its available and total
// resources and the lease requests waiting here as infeasible.
func (r *Raylet) heartbeatRequest() *pb.HeartbeatRequest {
	req := &pb.HeartbeatRequest{NodeId: r.nodeID[:], ObjectStore: r.objects.storeStats()}
	r.leases.heartbeat(req)
	return req
}

// kickHeartbeat asks the heartbeat loop to send one now (coalesced).
func (r *Raylet) kickHeartbeat() {
	select {
	case r.hbKick <- struct{}{}:
	default:
	}
}

// goTracked runs fn in a goroutine the raylet owns, unless it is stopping.
func (r *Raylet) goTracked(fn func()) bool {
	r.lifeMu.Lock()
	defer r.lifeMu.Unlock()
	if r.stopping {
		return false
	}
	r.wg.Add(1)
	go func() {
		defer r.wg.Done()
		fn()
	}()
	return true
}

// Address is the raylet's address (for a head, the address others join).
func (r *Raylet) Address() string { return r.addr }

// Token is the cluster token ("" with NoAuth).
func (r *Raylet) Token() string { return r.token }

// TokenFile is the file the token was written to (head) or read from.
func (r *Raylet) TokenFile() string { return r.tokenFile }

// NodeID is this raylet's node ID.
func (r *Raylet) NodeID() ids.NodeID { return r.nodeID }

// HeadAddress is the address of the head this raylet registered with.
func (r *Raylet) HeadAddress() string { return r.headAddr }

// StoreDir is the node's object store directory.
func (r *Raylet) StoreDir() string { return r.storeDir }

// SpillDir is the raylet's own directory of spilled objects.
func (r *Raylet) SpillDir() string { return r.spillDir }

// Stop kills every worker process and waits for it, stops serving (a
// server of its own), and removes the directories the raylet made. It is
// idempotent. A raylet served by another package's server is stopped in two
// steps: StopWorkers, then that server, then Stop.
func (r *Raylet) Stop() {
	r.stopOnce.Do(r.stop)
}

// StopWorkers kills every worker process and waits for it; the raylet
// starts no new one. It is idempotent, and the first step of Stop.
func (r *Raylet) StopWorkers() {
	r.workersOnce.Do(func() {
		r.lifeMu.Lock()
		r.stopping = true
		r.lifeMu.Unlock()
		ws := r.pool.all(true)
		r.cancel()
		for _, w := range ws {
			w.kill()
		}
		waitExited(ws, killWaitTimeout, r.log)
	})
}

func (r *Raylet) stop() {
	r.StopWorkers()
	if r.srv != nil {
		rpc.StopServer(r.srv, gracefulTimeout)
	}
	if r.headConn != nil {
		r.headConn.Close()
	}
	if r.transfer != nil {
		r.transfer.close()
	}
	if r.files != nil {
		r.files.Close()
	}
	r.wg.Wait()
	if r.objects != nil {
		r.objects.removing.Wait()
	}
	if r.arena != nil {
		r.arena.Close()
	}
	if r.ownStoreDir {
		os.RemoveAll(r.storeDir)
	} else if r.objects != nil {
		r.objects.removeFiles()
	}
	if r.spillDir != "" {
		os.RemoveAll(r.spillDir)
	}
	if r.ownDataDir {
		os.RemoveAll(r.dataDir)
	} else if r.dataDir != "" {
		os.RemoveAll(filepath.Join(r.dataDir, "jobs"))
	}
	if r.reaper != nil {
		if err := r.reaper.Close(); err != nil {
			r.log.Warn("stop the directory reaper", "err", err)
		}
	}
	if r.log != nil && r.addr != "" {
		r.log.Info("raylet stopped", "address", r.addr)
	}
}
