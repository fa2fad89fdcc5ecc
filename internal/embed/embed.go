// Package embed assembles goray's server parts into one process, as etcd's
// server/embed does: the head (package scheduler, Ray's GCS), its deployer
// and the public client gateway (internal/gateway), and the node manager
// (internal/raylet), all served on one gRPC server and port.
//
//   - `raylet --head` is Start with Head set: head, gateway and the head's
//     own node.
//   - `raylet --head --no-node` is the head and gateway alone (restartable
//     on a kept DataDir while nodes and their workers keep running).
//   - `raylet --address A` is a node that joins the head at A.
//   - runtime.Init with no address starts a head with its node in the
//     driver's process (the embedded default).
//
// Nothing else imports the head, the node and the gateway together; the core
// worker (internal/core) imports none of them.
package embed

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"google.golang.org/grpc"

	"github.com/goray/goray/internal/coordsrv"
	"github.com/goray/goray/internal/gateway"
	"github.com/goray/goray/internal/raylet"
	"github.com/goray/goray/internal/rpc"
	"github.com/goray/goray/internal/store"
	"github.com/goray/goray/scheduler"
)

// gracefulTimeout bounds a graceful stop of the server before a hard one.
const gracefulTimeout = 2 * time.Second

// Config configures a goray server process. The zero value of every field but
// Head/Address has a documented default; the node's fields are raylet.Config's.
type Config struct {
	// Head runs the cluster head (scheduler, deployer and the client
	// gateway) in this process, on the node's port. With Head, Address must
	// be empty: the node joins its own head.
	Head bool
	// NoNode (with Head only) runs the head alone: no node registers, no
	// worker starts, and the process serves only the head's services — the
	// shape in which a head can be restarted without taking a node's workers
	// with it (Ray's GCS). Drivers then connect to a raylet.
	NoNode bool
	// HeartbeatInterval and NodeTimeout configure the head (with Head only):
	// how often raylets heartbeat, and how long a silent node stays alive in
	// the head's table. Defaults scheduler.DefaultHeartbeatInterval and
	// scheduler.DefaultNodeTimeout.
	HeartbeatInterval, NodeTimeout time.Duration
	// DriverReconnectTimeout (with Head only) is how long a restarted head
	// waits for a running job's driver to reconnect before it finishes the
	// job. Default scheduler.DefaultDriverReconnectTimeout.
	DriverReconnectTimeout time.Duration

	// Coordination (with Head only): the etcd the head runs or uses (see
	// internal/coordsrv and docs/coordination.md).
	//   - EtcdListen, EtcdPeerListen: the embedded member's client and peer
	//     HOST:PORT; default free loopback ports, kept in the head's data
	//     dir so a restarted head comes back on the same endpoint.
	//   - EtcdEndpoints: an external etcd cluster's client URLs; no member
	//     runs, and EtcdUser/EtcdPassword are handed to the cluster's
	//     processes.
	//   - LazyCoordination: start the member on the first request for it
	//     rather than at Start (the embedded default of runtime.Init, so a
	//     program that never coordinates never starts etcd).
	EtcdListen, EtcdPeerListen string
	EtcdEndpoints              []string
	EtcdUser, EtcdPassword     string
	LazyCoordination           bool

	// High availability (docs/fault-tolerance.md): EtcdInitialCluster
	// (NAME=http://HOST:PORT,… — every head's etcd member) and EtcdName
	// (this head's) make this head one of several, each embedding a member
	// of one etcd cluster; one of them leads (elected through etcd with a
	// lease of HeadLeaseTTL, default leader.DefaultTTL) and the others are
	// standbys that refuse head calls with the leader's address. Every head
	// needs DataDir, EtcdListen, EtcdPeerListen and the one cluster token
	// (Token, or an existing TokenFile).
	EtcdName, EtcdInitialCluster string
	HeadLeaseTTL                 time.Duration

	// Config is the node's configuration (and, for a head, its listen
	// address, token and data directory):
	//   - Token: with Head, empty Token and !NoAuth a fresh one is generated
	//     (or the one kept in DataDir/head/token is reused).
	//   - TokenFile: with Head, where the token is written (mode 0600);
	//     default rpc.DefaultTokenPath(actual listen address).
	//   - DataDir: a head given one keeps its tables in DataDir/head/state.db
	//     (scheduler.BoltStore) and its token in DataDir/head/token, so it can
	//     be restarted on the same DataDir without losing its cluster; without
	//     one it keeps them in memory.
	raylet.Config
}

// Validate checks the configuration without touching the system.
func (c *Config) Validate() error {
	if c.Head && c.Address != "" {
		return errors.New("raylet config: --head and --address are exclusive: a head does not join another head")
	}
	if c.NoNode && !c.Head {
		return errors.New("raylet config: --no-node runs a head alone and needs --head")
	}
	if !c.Head && c.Address == "" {
		return errors.New("raylet config: either --head or --address HOST:PORT of a head is required")
	}
	if !c.Head && (c.EtcdListen != "" || c.EtcdPeerListen != "" || len(c.EtcdEndpoints) > 0) {
		return errors.New("raylet config: the etcd flags configure a head's coordination service and need --head")
	}
	if len(c.EtcdEndpoints) > 0 && (c.EtcdListen != "" || c.EtcdPeerListen != "") {
		return errors.New("raylet config: --etcd-endpoints uses an external etcd cluster; --etcd-listen and --etcd-peer-listen configure the embedded member instead: give one or the other")
	}
	if c.EtcdInitialCluster != "" || c.EtcdName != "" {
		if !c.Head {
			return errors.New("raylet config: --etcd-initial-cluster and --etcd-name make a head one of several and need --head")
		}
		if c.EtcdInitialCluster == "" || c.EtcdName == "" {
			return errors.New("raylet config: a head of several needs both --etcd-name (its member) and --etcd-initial-cluster (every head's member)")
		}
		if c.DataDir == "" {
			return errors.New("raylet config: a head of several needs --data-dir (its etcd member's data)")
		}
		if c.NoAuth {
			return errors.New("raylet config: a head of several needs the cluster token (drop --no-auth)")
		}
		if len(c.EtcdEndpoints) > 0 {
			return errors.New("raylet config: --etcd-endpoints uses an external etcd cluster; --etcd-initial-cluster embeds a member of one: give one or the other")
		}
	}
	if c.HeadLeaseTTL < 0 || c.HeadLeaseTTL%time.Second != 0 {
		return fmt.Errorf("raylet config: --head-lease-ttl %s: want a whole number of seconds", c.HeadLeaseTTL)
	}
	if c.HeartbeatInterval < 0 || c.NodeTimeout < 0 || c.DriverReconnectTimeout < 0 {
		return fmt.Errorf("raylet config: HeartbeatInterval %s, NodeTimeout %s and DriverReconnectTimeout %s must not be negative",
			c.HeartbeatInterval, c.NodeTimeout, c.DriverReconnectTimeout)
	}
	return c.Config.Validate()
}

// Server is one running goray server process: a head, a node, or both.
type Server struct {
	cfg       Config
	log       *slog.Logger
	addr      string
	token     string
	tokenFile string
	// removeTokenFile: the head wrote its token to the default path.
	removeTokenFile bool
	// headDir is the head's directory; ownHeadDir: a temporary one.
	headDir    string
	ownHeadDir bool
	// headReaper removes a temporary headDir if the process dies without
	// Close (nil without one).
	headReaper *store.Reaper

	lis       net.Listener
	srv       *grpc.Server
	serveDone chan struct{}
	sched     *scheduler.Server
	headStore *scheduler.BoltStore // the head's tables on disk, when kept
	gateway   *gateway.Gateway
	coord     *coordsrv.Engine
	// credFiles are the etcd credential files written beside the token file.
	credFiles []string
	node      *raylet.Raylet
	// ha is the election of a head of several (nil otherwise).
	ha *haHead
	// headNode swaps in a new incarnation of a head's node when the head
	// declares it dead (nil for a node alone or a head without one); node
	// is the first incarnation (Node returns the current one).
	headNode  *headNode
	closeOnce sync.Once
}

// Start starts the server cfg describes and returns once it serves (and its
// node, if any, is registered with the head). Close stops it.
func Start(ctx context.Context, cfg Config) (_ *Server, err error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.Listen == "" {
		cfg.Listen = raylet.DefaultListen
	}
	if !cfg.Head {
		n, err := raylet.Start(ctx, cfg.Config)
		if err != nil {
			return nil, err
		}
		return &Server{cfg: cfg, log: cfg.Logger, addr: n.Address(), token: n.Token(), tokenFile: n.TokenFile(), node: n}, nil
	}
	s := &Server{cfg: cfg, log: cfg.Logger.With("component", "head")}
	defer func() {
		if err != nil {
			s.Close()
		}
	}()
	if cfg.NoAuth {
		s.log.Warn("!!! AUTHENTICATION IS DISABLED (--no-auth): any process that can reach this head can run code on the cluster; use only on a trusted loopback setup !!!")
	}
	if err := s.makeHeadDir(); err != nil {
		return nil, err
	}
	if s.lis, err = net.Listen("tcp", cfg.Listen); err != nil {
		return nil, fmt.Errorf("raylet: listen on %s: %w", cfg.Listen, err)
	}
	s.addr = rpc.AdvertiseAddr(s.lis.Addr().(*net.TCPAddr))
	if !cfg.NoAuth {
		if err := s.headToken(); err != nil {
			return nil, err
		}
	}
	if cfg.EtcdInitialCluster != "" {
		if err := s.startHA(ctx); err != nil {
			return nil, err
		}
		return s, nil
	}
	var st scheduler.Store // default: memory
	if !s.ownHeadDir {
		// A kept data dir: the head's tables survive a restart.
		if s.headStore, err = scheduler.OpenBoltStore(filepath.Join(s.headDir, "state.db")); err != nil {
			return nil, fmt.Errorf("raylet: start head: %w", err)
		}
		st = s.headStore
	}
	s.sched, err = scheduler.New(scheduler.Config{
		DataDir:                s.headDir,
		Token:                  s.token,
		HeartbeatInterval:      cfg.HeartbeatInterval,
		NodeTimeout:            cfg.NodeTimeout,
		DriverReconnectTimeout: cfg.DriverReconnectTimeout,
		Logger:                 cfg.Logger,
		Store:                  st,
	})
	if err != nil {
		return nil, fmt.Errorf("raylet: start head: %w", err)
	}
	if s.coord, err = coordsrv.New(coordsrv.Config{
		Dir: s.headDir, ClientListen: cfg.EtcdListen, PeerListen: cfg.EtcdPeerListen,
		Endpoints: cfg.EtcdEndpoints, User: cfg.EtcdUser, Password: cfg.EtcdPassword,
		Token: s.token, Logger: cfg.Logger,
	}); err != nil {
		return nil, fmt.Errorf("raylet: %w", err)
	}
	if !cfg.LazyCoordination {
		if err := s.coord.Start(ctx); err != nil {
			return nil, fmt.Errorf("raylet: start the head's coordination service: %w", err)
		}
		if err := s.writeCredFiles(); err != nil {
			return nil, err
		}
	}
	s.srv = grpc.NewServer(raylet.ServerOptions(s.token)...)
	s.sched.Register(s.srv)
	s.coord.Register(s.srv)
	// Deployed namespaces (goray deploy) and the client gateway.
	scheduler.NewDeployer(s.sched).Register(s.srv)
	if s.gateway, err = gateway.New(gateway.Config{HeadAddress: s.addr, Token: s.token, Logger: cfg.Logger, Version: gateway.ServerVersion}); err != nil {
		return nil, fmt.Errorf("raylet: start the client gateway: %w", err)
	}
	s.gateway.Register(s.srv)
	if !cfg.NoNode {
		nc := cfg.Config
		nc.Address, nc.HeadNode, nc.Token, nc.TokenFile = s.addr, true, s.token, ""
		if s.node, err = raylet.New(nc, s.lis.Addr()); err != nil {
			return nil, err
		}
		s.headNode = newHeadNode(s.srv, s.lis.Addr(), nc)
		s.headNode.set(s.node)
	}
	s.serveDone = make(chan struct{})
	go func() {
		defer close(s.serveDone)
		if err := s.srv.Serve(s.lis); err != nil && !errors.Is(err, grpc.ErrServerStopped) {
			s.log.Error("gRPC server stopped", "err", err)
		}
	}()
	if s.node == nil {
		s.log.Info("head ready (no node)", "address", s.addr, "data_dir", s.headDir, "persistent", s.headStore != nil)
		return s, nil
	}
	if err := s.node.Join(ctx); err != nil {
		return nil, err
	}
	s.headNode.start(s.log)
	return s, nil
}

// makeHeadDir makes the head's directory: DataDir/head, or a fresh temporary
// one (removed on Close) when no DataDir is given.
func (s *Server) makeHeadDir() error {
	if s.cfg.DataDir != "" {
		dir, err := filepath.Abs(s.cfg.DataDir)
		if err != nil {
			return fmt.Errorf("raylet: data dir: %w", err)
		}
		s.headDir = filepath.Join(dir, "head")
		if err := os.MkdirAll(s.headDir, 0o700); err != nil {
			return fmt.Errorf("raylet: data dir: %w", err)
		}
		return nil
	}
	base, err := rpc.MakeRuntimeDir()
	if err != nil {
		return fmt.Errorf("raylet: data dir: %w", err)
	}
	// Directories left by heads that were killed before they could remove
	// their own go first.
	for _, d := range store.Sweep(base, "head-") {
		s.log.Info("removed the data dir of a head that is gone", "dir", d)
	}
	d, err := os.MkdirTemp(base, "head-")
	if err != nil {
		return fmt.Errorf("raylet: data dir: %w", err)
	}
	if err := store.Claim(d); err != nil {
		os.RemoveAll(d)
		return fmt.Errorf("raylet: data dir: %w", err)
	}
	s.headDir, s.ownHeadDir = d, true
	if s.headReaper, err = store.StartReaper(d); err != nil {
		s.log.Warn("no reaper: if this head is killed, its data dir stays until the next head starts", "err", err)
	}
	return nil
}

// headToken generates (if needed) and writes the head's token file, and sets
// the address the head is reached at. A head on a kept data dir keeps its
// token in DataDir/head/token and reuses it when restarted, so its raylets
// and drivers can reconnect.
func (s *Server) headToken() error {
	s.token = s.cfg.Token
	if s.token == "" && s.cfg.EtcdInitialCluster != "" {
		// Every head of several serves the one cluster token.
		if s.cfg.TokenFile == "" {
			return errors.New("raylet: the heads of a cluster share one token: write it to a file (mode 0600) and give each head --token-file (see docs/fault-tolerance.md)")
		}
		t, err := rpc.ReadTokenFile(s.cfg.TokenFile)
		if err != nil {
			return fmt.Errorf("raylet: the heads of a cluster share one token, read from --token-file: %w", err)
		}
		s.token = t
	}
	keep := ""
	if s.token == "" && !s.ownHeadDir {
		keep = filepath.Join(s.headDir, "token")
		if t, err := rpc.ReadTokenFile(keep); err == nil {
			s.token = t
		} else if !errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("raylet: %w", err)
		}
	}
	if s.token == "" {
		t, err := rpc.GenerateToken()
		if err != nil {
			return err
		}
		s.token = t
		if keep != "" {
			if err := rpc.WriteTokenFile(keep, t); err != nil {
				return fmt.Errorf("raylet: %w", err)
			}
		}
	}
	s.tokenFile = s.cfg.TokenFile
	if s.tokenFile != "" {
		if abs, err := filepath.Abs(s.tokenFile); err == nil {
			s.tokenFile = abs
		}
	} else {
		s.tokenFile = rpc.DefaultTokenPath(s.addr)
		s.removeTokenFile = true
	}
	if err := rpc.WriteTokenFile(s.tokenFile, s.token); err != nil {
		s.removeTokenFile = false
		return fmt.Errorf("raylet: %w", err)
	}
	return nil
}

// Address is where the server is reached: the head's address for a head
// (its node shares it), else the node's.
func (s *Server) Address() string { return s.addr }

// Token is the cluster token ("" with NoAuth).
func (s *Server) Token() string { return s.token }

// TokenFile is the file the token was written to (head) or read from.
func (s *Server) TokenFile() string { return s.tokenFile }

// Coordination is the head's coordination engine (nil for a node alone).
func (s *Server) Coordination() *coordsrv.Engine { return s.coord }

// CredFiles are the files the head wrote its etcd credentials to, beside
// its token file: the read-write user's, then the read-only user's (none
// without a token file, or before a lazy engine started).
func (s *Server) CredFiles() []string { return s.credFiles }

// writeCredFiles writes the etcd endpoint and credentials beside the token
// file, mode 0600, as etcdctl's environment variables:
// <token file>.etcd (read-write user) and <token file>.etcd-ro.
func (s *Server) writeCredFiles() error {
	if s.tokenFile == "" {
		return nil
	}
	in := s.coord.Info()
	for _, f := range []struct{ path, user, pass string }{
		{s.tokenFile + ".etcd", in.User, in.Password},
		{s.tokenFile + ".etcd-ro", in.ROUser, in.ROPassword},
	} {
		// As the token file: a fresh file renamed into place, mode 0600,
		// never written through a file planted at the path.
		if err := rpc.WriteTokenFile(f.path, strings.TrimSuffix(coordsrv.EnvFile(in.Endpoints, f.user, f.pass), "\n")); err != nil {
			return fmt.Errorf("raylet: write the etcd credentials: %w", err)
		}
		s.credFiles = append(s.credFiles, f.path)
	}
	return nil
}

// Node is the server's node; nil for a head alone (NoNode).
func (s *Server) Node() *raylet.Raylet {
	if s.headNode != nil {
		return s.headNode.current()
	}
	return s.node
}

// Close stops the server: the node's workers first, then the head's gateway
// and the head (ending its KeepJobAlive streams without finishing their
// jobs), then the gRPC server, then the node's and the head's files. It is
// idempotent.
func (s *Server) Close() { s.closeOnce.Do(s.close) }

func (s *Server) close() {
	if s.headNode != nil {
		s.headNode.stopWatch()
	}
	node := s.Node()
	if s.srv == nil { // a node alone, or a head that never served
		if node != nil {
			node.Stop()
		}
		s.closeHead()
		return
	}
	if node != nil {
		node.StopWorkers()
	}
	if s.gateway != nil {
		s.gateway.Close()
	}
	if s.ha != nil {
		s.ha.stop()
	}
	if s.sched != nil {
		s.sched.Close()
	}
	rpc.StopServer(s.srv, gracefulTimeout)
	if s.coord != nil {
		s.coord.Close()
	}
	if s.serveDone != nil {
		<-s.serveDone
	}
	if node != nil {
		node.Stop()
	}
	s.closeHead()
	if s.log != nil && s.addr != "" {
		s.log.Info("head stopped", "address", s.addr)
	}
}

// closeHead closes what the head keeps outside the server: its store, its
// token file and its temporary directory. It is idempotent.
func (s *Server) closeHead() {
	if s.coord != nil {
		s.coord.Close()
	}
	if s.removeTokenFile {
		for _, f := range s.credFiles {
			os.Remove(f)
		}
	}
	s.credFiles = nil
	if s.headStore != nil {
		if err := s.headStore.Close(); err != nil {
			s.log.Error("close the head's store", "err", err)
		}
		s.headStore = nil
	}
	if s.lis != nil && s.srv == nil {
		s.lis.Close()
	}
	if s.removeTokenFile {
		os.Remove(s.tokenFile)
		s.removeTokenFile = false
	}
	if s.ownHeadDir {
		os.RemoveAll(s.headDir)
		s.ownHeadDir = false
	}
	if s.headReaper != nil {
		if err := s.headReaper.Close(); err != nil {
			s.log.Warn("stop the data dir reaper", "err", err)
		}
		s.headReaper = nil
	}
}
