// Package core is goray's in-process core worker (Ray's core_worker): the part
// of every driver and worker process that owns objects, submits tasks over
// leased workers, calls actors directly, and — in a worker — executes tasks
// and hosts actors. The public SDK packages (runtime, actor, task,
// objectstore) are façades over it.
package core

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/goray/goray/internal/errs"
	"github.com/goray/goray/internal/ids"
	"github.com/goray/goray/internal/rpc"
	"github.com/goray/goray/internal/workerenv"
	pb "github.com/goray/goray/proto/goray/v1"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// InlineLimit is the size below which a value travels inline and lives in its
// owner's memory; larger values go to the node's object store.
const InlineLimit = 100 << 10

// connectTimeout bounds how long Init waits for a cluster to answer.
const connectTimeout = 5 * time.Second

// Options configure a driver.
type Options struct {
	// Address of a raylet (usually the head's) to connect to. Empty: use
	// GORAY_ADDRESS, and with neither start an embedded cluster in-process.
	Address string
	// Token is the cluster token. Empty: GORAY_TOKEN, GORAY_TOKEN_FILE, then
	// the token file `raylet --head` wrote on this machine for Address.
	Token string
	// Namespace for named actors; default "default".
	Namespace string
	// Resources of the embedded node; default: this machine's.
	Resources map[string]float64
	Logger    *slog.Logger
	// StartEmbedded starts a cluster inside this process when no address is
	// given. runtime.Init sets it (package internal/embed); the core worker
	// imports no server package. Nil: an address is required.
	StartEmbedded func(ctx context.Context, resources map[string]float64, log *slog.Logger) (Embedded, error)
}

// Embedded is a cluster (head and node) running inside this process.
type Embedded interface {
	Address() string
	Token() string
	Close()
}

// Core is one process's core worker (Ray's CoreWorker). It composes the
// managers that own the process's state, each behind its own lock:
//
//   - objs, the owner's object table (objects.go), and lin, the lineage
//     kept to rebuild lost results (lineage.go);
//   - tasks, the task submitter (tasks.go), over a leaseClient (the local
//     raylet and its spillbacks) and a taskPusher (execs);
//   - actors, the actor submitter (actorsubmit.go), over the same pusher
//     and an actorLocator (the head);
//   - execs, the Execute streams to workers (exec.go), and conns, the
//     connections (core.go);
//   - host, the actors this worker hosts, and the worker service's
//     executor of tasks (host.go, server.go, mailbox.go).
//
// The fields set by InitDriver, Attach or RunWorker before the core serves
// (IDs, addresses, clients) are not written again; no lock guards them.
type Core struct {
	worker    bool
	log       *slog.Logger
	jobID     ids.JobID
	workerID  ids.WorkerID
	nodeID    ids.NodeID
	token     string
	namespace string
	headAddr  string
	raylet    string // local raylet address
	storeDir  string
	addr      string // this process's WorkerService address
	// noArena: the node has no shared-memory arena; objects go to files.
	noArena atomic.Bool

	srv  *grpc.Server
	head *rpc.HeadClient
	// headConn follows the leader among the cluster's heads (closed at
	// shutdown).
	headConn *rpc.HeadConn
	node     *rpc.NodeClient
	conns    connPool
	objs     *objectTable
	execs    execPool
	tasks    *taskScheduler
	host     *actorHost
	putMu    sync.Mutex
	putTID   ids.TaskID
	putIdx   uint32

	lin lineage
	// borrows: the objects of other owners this process holds refs to;
	// monitor: the liveness of this process's borrowers; freer: stored
	// copies of freed objects to remove; pressure: GCs for store use
	// (refcount.go).
	borrows      borrowTable
	monitor      borrowerMonitor
	freer        storeFreer
	repl         replicator // the replicated objects it owns (replicas.go)
	pressure     storePressure
	freedObjects atomic.Int64
	actors       *actorSubmitter
	calls        callTable // the calls it submitted that have not finished
	local        localNode // this process's node, once its raylet is gone (peers.go)
	stats        Stats
	// waitingGets counts the GetObject calls (borrowers) waiting here for
	// an object this process owns to be ready.
	waitingGets atomic.Int64

	ctx    context.Context // cancelled by Shutdown
	cancel context.CancelFunc
	wg     sync.WaitGroup
	// goMu orders Go's wg.Add before shutdown's cancel (and so its Wait).
	goMu     sync.Mutex
	embedded Embedded
	closed   atomic.Bool
	// attached: this core drives an existing job (a deployment's, see
	// attach.go) that it did not register, so Shutdown does not finish it.
	attached bool
}

var current atomic.Pointer[Core]

// ErrNotInitialized is returned by every call made before runtime.Init; it
// is errs.ErrNotInitialized, which runtime re-exports.
var ErrNotInitialized = errs.ErrNotInitialized

// Stats count the failures this process recovered from, for tests and the
// chaos test's report.
type Stats struct {
	TaskRetries   atomic.Int64
	actorRetries  atomic.Int64
	Reconstructed atomic.Int64
	// Rereplicated counts copies of replicated objects placed again after
	// their nodes died.
	Rereplicated atomic.Int64
}

// ActorRetries is how many actor calls were sent again to a new incarnation.
func (s *Stats) ActorRetries() int64 { return s.actorRetries.Load() }

// Stats are this process's recovery counters.
func (c *Core) Stats() *Stats { return &c.stats }

// Current is the process's core, set by InitDriver or RunWorker.
func Current() (*Core, error) {
	c := current.Load()
	if c == nil {
		return nil, ErrNotInitialized
	}
	return c, nil
}

func newCore(log *slog.Logger, token string) *Core {
	ctx, cancel := context.WithCancel(context.Background())
	c := &Core{log: log, token: token, ctx: ctx, cancel: cancel, workerID: ids.NewWorkerID()}
	c.conns.token = token
	c.objs = newObjectTable()
	c.execs.c = c
	c.tasks = newTaskScheduler(submitterConfig{
		ctx: ctx, wg: &c.wg, log: log, leases: rayletLeases{c}, pusher: &c.execs,
		retried:  func() { c.stats.TaskRetries.Add(1) },
		finished: c.keepLineage,
	})
	c.actors = newActorSubmitter(actorSubmitterConfig{
		ctx: ctx, wg: &c.wg, pusher: &c.execs, locator: headActors{c},
		retried: func() { c.stats.actorRetries.Add(1) },
		report:  c.reportUnreachable,
	})
	c.host = newActorHost(c)
	return c
}

// listen starts this process's WorkerService on host.
func (c *Core) listen(host string) error {
	lis, err := net.Listen("tcp", net.JoinHostPort(host, "0"))
	if err != nil {
		return fmt.Errorf("listen for worker service: %w", err)
	}
	c.addr = lis.Addr().String()
	if ip := net.ParseIP(host); ip != nil && ip.IsUnspecified() && c.raylet != "" {
		// Listening on every interface: advertise the host the raylet is
		// reached at, which the cluster can route to.
		rhost, _, _ := net.SplitHostPort(c.raylet)
		_, port, _ := net.SplitHostPort(c.addr)
		c.addr = net.JoinHostPort(rhost, port)
	}
	c.srv = grpc.NewServer(rpc.ServerOptions(c.token)...)
	pb.RegisterWorkerServiceServer(c.srv, &workerServer{c: c})
	registerServices(c, c.srv)
	c.wg.Add(1)
	go func() {
		defer c.wg.Done()
		_ = c.srv.Serve(lis)
	}()
	return nil
}

// InitDriver connects this process to a cluster as a driver, or starts an
// embedded one, registers the job and its binary, and makes the core current.
func InitDriver(ctx context.Context, opts Options) (*Core, error) {
	if current.Load() != nil {
		return nil, errors.New("goray is already initialised: call runtime.Shutdown before Init again")
	}
	log := opts.Logger
	if log == nil {
		log = DefaultLogger()
	}
	addr := opts.Address
	if addr == "" {
		addr = os.Getenv("GORAY_ADDRESS")
	}
	var emb Embedded
	token := ""
	if addr == "" {
		if opts.StartEmbedded == nil {
			return nil, errors.New("no cluster address: set GORAY_ADDRESS or runtime.WithAddress to a raylet's address")
		}
		var err error
		emb, err = opts.StartEmbedded(ctx, opts.Resources, log)
		if err != nil {
			return nil, fmt.Errorf("start embedded cluster: %w", err)
		}
		addr, token = emb.Address(), emb.Token()
	} else {
		token = rpc.ResolveToken(opts.Token, addr)
	}
	c := newCore(log, token)
	c.embedded = emb
	c.namespace = opts.Namespace
	if c.namespace == "" {
		c.namespace = "default"
	}
	// Run by `goray deploy`: attach to the deployment's job (attach.go).
	if job, ok, err := deployJobFromEnv(); err != nil || ok {
		if err == nil {
			if opts.Namespace == "" && os.Getenv(EnvDeployNamespace) != "" {
				c.namespace = os.Getenv(EnvDeployNamespace)
			}
			err = c.attach(ctx, addr, job)
		}
		if err != nil {
			c.shutdown()
			return nil, errAttachedRemote(addr, err)
		}
		current.Store(c)
		return c, nil
	}
	if err := c.connectDriver(ctx, addr); err != nil {
		c.shutdown()
		return nil, err
	}
	current.Store(c)
	return c, nil
}

// joinNode connects c to the raylet at addr (its local node) and to the
// notARaylet explains a server at addr that answers but serves no
// NodeService: a head run with --no-node (a driver needs a raylet, which
// hosts its workers and objects), or something that is not goray at all.
func (c *Core) notARaylet(ctx context.Context, addr string, cc grpc.ClientConnInterface) error {
	cctx, cancel := context.WithTimeout(ctx, connectTimeout)
	defer cancel()
	resp, err := rpc.NewHeadClient(cc).ListNodes(cctx, &pb.ListNodesRequest{})
	if err != nil {
		return fmt.Errorf("the server at %s is not a goray raylet (it serves no NodeService): set GORAY_ADDRESS to a raylet's address", addr)
	}
	var raylets []string
	for _, n := range resp.GetNodes() {
		if n.GetAlive() && n.GetAddress() != "" && len(raylets) < 3 {
			raylets = append(raylets, n.GetAddress())
		}
	}
	hint := "start one with `raylet --address " + addr + "` and use its address"
	if len(raylets) > 0 {
		hint = "e.g. " + strings.Join(raylets, ", ")
	}
	return fmt.Errorf("%s is a goray head with no node (raylet --head --no-node); a driver connects to a raylet: set GORAY_ADDRESS to a raylet's address (%s)", addr, hint)
}

// head that raylet names, and starts c's WorkerService.
func (c *Core) joinNode(ctx context.Context, addr string) error {
	c.raylet = addr
	cc, err := c.conns.get(addr)
	if err != nil {
		return err
	}
	c.node = rpc.NewNodeClient(cc)
	cctx, cancel := context.WithTimeout(ctx, connectTimeout)
	info, err := c.node.GetNodeInfo(cctx, &pb.GetNodeInfoRequest{})
	cancel()
	if err != nil {
		switch status.Code(err) {
		case codes.Unauthenticated:
			return fmt.Errorf("the goray cluster at %s rejected this driver's token (%s): set GORAY_TOKEN or GORAY_TOKEN_FILE to the token file `raylet --head` wrote", addr, status.Convert(err).Message())
		case codes.Unimplemented:
			return c.notARaylet(ctx, addr, cc)
		default:
			return fmt.Errorf("no goray raylet answers at %s (%v): start one with `raylet --head`, or unset GORAY_ADDRESS to run an embedded cluster", addr, status.Convert(err).Message())
		}
	}
	if c.nodeID, err = ids.ParseNodeID(info.GetNodeId()); err != nil {
		return fmt.Errorf("raylet at %s: %w", addr, err)
	}
	c.headAddr, c.storeDir = info.GetHeadAddress(), info.GetStoreDir()
	if err := c.dialHead(); err != nil {
		return err
	}
	return c.listen(localHostFor(addr))
}

// dialHead connects c to its cluster's head (c.headAddr: one address, or
// several heads separated by commas, of which c follows the leader).
func (c *Core) dialHead() error {
	hc, err := rpc.DialHead(c.headAddr, c.token)
	if err != nil {
		return err
	}
	c.headConn, c.head = hc, rpc.NewHeadClient(hc)
	return nil
}

func (c *Core) connectDriver(ctx context.Context, addr string) error {
	// Several raylets (GORAY_ADDRESS=a,b,c, e.g. the nodes of a cluster's
	// heads): the first that answers.
	var err error
	for _, a := range rpc.SplitAddresses(addr) {
		if err = c.joinNode(ctx, a); err == nil {
			break
		}
	}
	if err != nil {
		return err
	}
	if err := c.registerJob(ctx); err != nil {
		return err
	}
	// The job lives as long as this stream: when the driver exits, even by
	// SIGKILL, the head finishes the job and the raylets stop its workers.
	alive, err := c.head.KeepJobAlive(c.ctx, &pb.KeepJobAliveRequest{JobId: c.jobID[:]})
	if err != nil {
		return fmt.Errorf("keep job alive: %w", err)
	}
	c.wg.Go(func() { c.keepJobAlive(alive) })
	c.putTID = ids.NewTaskID(c.jobID)
	return nil
}

// keepJobAlive holds the driver's KeepJobAlive stream until Shutdown. When
// it breaks while the driver lives (the head restarted, or the network
// failed), it is opened again with a backoff of at most 2s: a restarted head
// waits for it (scheduler.Config.DriverReconnectTimeout) before finishing
// the job. It gives up when the head says the job is finished or unknown.
func (c *Core) keepJobAlive(stream pb.JobService_KeepJobAliveClient) {
	const maxBackoff = 2 * time.Second
	for {
		var err error
		for err == nil {
			_, err = stream.Recv()
		}
		if c.ctx.Err() != nil || c.closed.Load() {
			return
		}
		if errors.Is(err, io.EOF) {
			c.log.Warn("the head finished this driver's job", "job", c.jobID)
			return
		}
		if status.Code(err) == codes.NotFound {
			c.log.Error("the head no longer knows this driver's job (it restarted without its tables)", "job", c.jobID, "err", err)
			return
		}
		c.log.Warn("lost the head's KeepJobAlive stream; reconnecting", "head", c.headAddr, "job", c.jobID, "err", err)
		for wait := 100 * time.Millisecond; ; wait = min(2*wait, maxBackoff) {
			t := time.NewTimer(wait)
			select {
			case <-c.ctx.Done():
				t.Stop()
				return
			case <-t.C:
			}
			s, err := c.head.KeepJobAlive(c.ctx, &pb.KeepJobAliveRequest{JobId: c.jobID[:]})
			if err == nil {
				_, err = s.Header() // sent once the head watches the job
			}
			if err == nil {
				c.log.Info("reconnected to the head", "head", c.headAddr, "job", c.jobID)
				stream = s
				break
			}
		}
	}
}

// localHostFor is the host this process should listen on so that the cluster
// at addr can reach it: loopback for a loopback cluster, otherwise the local
// address the kernel would route to addr from.
func localHostFor(addr string) string {
	if rpc.IsLoopback(addr) {
		return "127.0.0.1"
	}
	conn, err := net.Dial("udp", addr)
	if err != nil {
		return "127.0.0.1"
	}
	defer conn.Close()
	host, _, _ := net.SplitHostPort(conn.LocalAddr().String())
	return host
}

func (c *Core) registerJob(ctx context.Context) error {
	exe, err := os.Executable()
	if err != nil {
		return fmt.Errorf("find this program's binary (workers run it): %w", err)
	}
	f, err := os.Open(exe)
	if err != nil {
		return fmt.Errorf("read this program's binary: %w", err)
	}
	defer f.Close()
	h := sha256.New()
	size, err := io.Copy(h, f)
	if err != nil {
		return fmt.Errorf("hash this program's binary: %w", err)
	}
	sum := h.Sum(nil)
	resp, err := c.head.RegisterJob(ctx, &pb.RegisterJobRequest{
		BinarySha256: sum, BinarySize: uint64(size), DriverAddress: c.addr,
		Namespace: c.namespace, Entrypoint: filepath.Base(exe),
	})
	if err != nil {
		return fmt.Errorf("register job with the head at %s: %w", c.headAddr, errs.FromStatus(err))
	}
	if c.jobID, err = ids.ParseJobID(resp.GetJobId()); err != nil {
		return fmt.Errorf("register job: %w", err)
	}
	if resp.GetBinaryPresent() {
		return nil
	}
	return UploadJobBinary(ctx, c.head, f, sum, size)
}

// DefaultLogger logs to stderr at the level GORAY_LOG_LEVEL names (debug,
// info, warn, error); default warn, so a driver's output stays its own.
func DefaultLogger() *slog.Logger {
	var level slog.Level
	if err := level.UnmarshalText([]byte(os.Getenv("GORAY_LOG_LEVEL"))); err != nil {
		level = slog.LevelWarn
	}
	return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))
}

// RunWorker serves as a worker process started by a raylet and exits the
// process when the raylet closes the registration stream. It never returns.
func RunWorker() {
	env, err := workerenv.Read()
	if err != nil {
		fmt.Fprintln(os.Stderr, "goray worker:", err)
		os.Exit(2)
	}
	c := newCore(DefaultLogger(), env.Token)
	c.worker = true
	c.raylet, c.headAddr, c.storeDir = env.RayletAddress, env.HeadAddress, env.StoreDir
	// The job's namespace: a task or actor that spawns or looks up a named
	// actor without naming a namespace uses its job's, as the driver does.
	c.namespace = env.Namespace
	fail := func(err error) {
		fmt.Fprintln(os.Stderr, "goray worker:", err)
		os.Exit(2)
	}
	if c.jobID, err = parseHex(env.JobID, ids.ParseJobID); err != nil {
		fail(err)
	}
	if c.workerID, err = parseHex(env.WorkerID, ids.ParseWorkerID); err != nil {
		fail(err)
	}
	if c.nodeID, err = parseHex(env.NodeID, ids.ParseNodeID); err != nil {
		fail(err)
	}
	c.putTID = ids.NewTaskID(c.jobID)
	// The link to the raylet doubles as the worker's lifeline: it is pinged
	// often, and when it breaks the worker exits (see rpc.LivenessInterval).
	rc, err := rpc.DialLiveness(c.raylet, c.token)
	if err != nil {
		fail(err)
	}
	c.conns.put(c.raylet, rc)
	c.node = rpc.NewNodeClient(rc)
	if c.headAddr != "" {
		if err := c.dialHead(); err != nil {
			fail(err)
		}
	}
	if err := c.listen(env.ListenHost); err != nil {
		fail(err)
	}
	// Current before registering: once registered, calls may arrive at
	// once, and user code in them (a Put, a nested call) needs the core.
	current.Store(c)
	reg, err := c.node.RegisterWorker(c.ctx, &pb.RegisterWorkerRequest{WorkerId: c.workerID[:], Address: c.addr, Pid: int32(os.Getpid())})
	if err != nil {
		fail(fmt.Errorf("register with raylet %s: %w", c.raylet, err))
	}
	if _, err := reg.Recv(); err != nil {
		fail(fmt.Errorf("register with raylet %s: %w", c.raylet, err))
	}
	for {
		if _, err := reg.Recv(); err != nil {
			break // the raylet is gone or let us go: a worker never outlives it
		}
	}
	os.Exit(0)
}

func parseHex[T any](s string, parse func([]byte) (T, error)) (T, error) {
	var zero T
	b, err := hex.DecodeString(s)
	if err != nil {
		return zero, fmt.Errorf("malformed ID %q in worker environment: %w", s, err)
	}
	return parse(b)
}

// Shutdown finishes the job and releases everything the core holds.
func (c *Core) Shutdown() {
	if !c.closed.CompareAndSwap(false, true) {
		return
	}
	current.CompareAndSwap(c, nil)
	if c.head != nil && c.jobID != (ids.JobID{}) && !c.worker && !c.attached {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		_, _ = c.head.FinishJob(ctx, &pb.FinishJobRequest{JobId: c.jobID[:]})
		cancel()
	}
	c.shutdown()
}

func (c *Core) shutdown() {
	c.goMu.Lock()
	c.cancel()
	c.goMu.Unlock()
	c.tasks.close()
	c.host.close()
	c.execs.closeAll()
	if c.srv != nil {
		rpc.StopServer(c.srv, 2*time.Second)
	}
	c.wg.Wait()
	c.conns.closeAll()
	if c.headConn != nil {
		c.headConn.Close()
	}
	if c.embedded != nil {
		c.embedded.Close()
	}
}

// JobID is the job this process belongs to.
func (c *Core) JobID() ids.JobID { return c.jobID }

// NodeID is the node this process runs on.
func (c *Core) NodeID() ids.NodeID { return c.nodeID }

// Namespace is the driver's namespace for named actors.
func (c *Core) Namespace() string { return c.namespace }

// Address is this process's WorkerService address.
func (c *Core) Address() string { return c.addr }

// Head is the head's client.
func (c *Core) Head() *rpc.HeadClient { return c.head }

// connPool caches one client connection per address; any goroutine calls
// it, and Shutdown closes every connection. mu guards m.
type connPool struct {
	token string
	mu    sync.Mutex
	m     map[string]*grpc.ClientConn // guarded by mu
}

func (p *connPool) get(addr string) (*grpc.ClientConn, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if cc, ok := p.m[addr]; ok {
		return cc, nil
	}
	cc, err := rpc.Dial(addr, p.token)
	if err != nil {
		return nil, err
	}
	if p.m == nil {
		p.m = map[string]*grpc.ClientConn{}
	}
	p.m[addr] = cc
	return cc, nil
}

// put adds a connection made elsewhere.
func (p *connPool) put(addr string, cc *grpc.ClientConn) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.m == nil {
		p.m = map[string]*grpc.ClientConn{}
	}
	p.m[addr] = cc
}

func (p *connPool) closeAll() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for a, cc := range p.m {
		cc.Close()
		delete(p.m, a)
	}
}

// UploadJobBinary sends a job binary (f, whose SHA-256 is sum) to the head in
// 1 MiB chunks. The head checks the size and the hash.
func UploadJobBinary(ctx context.Context, head *rpc.HeadClient, f *os.File, sum []byte, size int64) error {
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		return err
	}
	up, err := head.UploadJobBinary(ctx)
	if err != nil {
		return fmt.Errorf("upload job binary: %w", errs.FromStatus(err))
	}
	if err := up.Send(&pb.UploadJobBinaryRequest{BinarySha256: sum, Size: uint64(size)}); err != nil {
		return fmt.Errorf("upload job binary: %w", err)
	}
	buf := make([]byte, 1<<20)
	for {
		n, rerr := f.Read(buf)
		if n > 0 {
			if err := up.Send(&pb.UploadJobBinaryRequest{Chunk: buf[:n]}); err != nil {
				break // the real error comes from CloseAndRecv
			}
		}
		if rerr == io.EOF {
			break
		}
		if rerr != nil {
			return fmt.Errorf("read the job binary: %w", rerr)
		}
	}
	if _, err := up.CloseAndRecv(); err != nil {
		return fmt.Errorf("upload job binary: %w", errs.FromStatus(err))
	}
	return nil
}
