// Package coordsrv is the head's coordination engine: an embedded
// single-member etcd (go.etcd.io/etcd/server/v3/embed) whose data lives under
// the head's data directory, or an external etcd cluster the head was pointed
// at, plus the CoordinationService that tells the cluster's processes how to
// reach it and with which credentials.
//
// The embedded member's client endpoint is protected by etcd's own
// authentication. Three users exist, their passwords derived from the
// cluster token (see Passwords): "root" (etcd's admin, used by the head
// itself: compaction, user management), "goray" (read-write on every key) and
// "goray-ro" (read-only on every key). With no token (--no-auth) etcd's
// authentication stays off.
//
// The engine is made by internal/embed (the one package that assembles the
// head's parts); nothing in the SDK imports it.
package coordsrv

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/server/v3/embed"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"golang.org/x/crypto/bcrypt"
	"google.golang.org/grpc"

	"github.com/goray/goray/internal/errs"
	"github.com/goray/goray/internal/rpc"
	pb "github.com/goray/goray/proto/goray/v1"
)

// The etcd users the engine creates (embedded member with auth).
const (
	UserRoot     = "root"
	UserRW       = "goray"
	UserRO       = "goray-ro"
	roleRW       = "goray-rw"
	roleRO       = "goray-ro"
	memberName   = "goray-head"
	dirName      = "etcd"
	urlsFileName = "urls.json"
)

// Defaults.
const (
	// DefaultMaxRequestBytes is etcd's limit on one request (key and value
	// together, plus a little framing): etcd's own default, 1.5 MiB.
	DefaultMaxRequestBytes = 1536 * 1024
	// DefaultTickMs and DefaultElectionMs are the member's raft timing. A
	// single member needs no slack for a network, and the shortest lease
	// TTL etcd grants is 1.5 election timeouts: 750 ms here, so that a
	// session of a dead process ends within a second or two.
	DefaultTickMs     = 50
	DefaultElectionMs = 500
	// DefaultCompactionRetention keeps an hour of history (etcd's periodic
	// auto-compaction): a watch can resume from any revision of the last
	// hour.
	DefaultCompactionRetention = time.Hour
	startTimeout               = 60 * time.Second
)

// Config configures the engine. The zero value (with Dir) is an embedded
// member listening on a free loopback port, without auth.
//
// Issue 13 (head HA) extends it: Members (the peer URLs of the other heads'
// members, for an initial cluster of three) joins the embedded member to the
// others; Endpoints stays the way to use a cluster run elsewhere.
type Config struct {
	// Dir holds the member's data (Dir/etcd) and the URLs it listens on
	// (Dir/etcd/urls.json), so that a restarted head on the same Dir comes
	// back with its keys, revisions and endpoint. Required for the embedded
	// member.
	Dir string
	// ClientListen is the member's client address HOST:PORT. Default: the one
	// kept in Dir, else a free port on 127.0.0.1. A non-loopback address
	// needs Token (auth).
	ClientListen string
	// PeerListen is the member's peer (raft) address; default a free port on
	// 127.0.0.1 (kept in Dir).
	PeerListen string
	// Endpoints, when set, is an external etcd cluster (client URLs): no
	// member is started, and User/Password are the credentials handed out
	// (for both read-write and read-only requests).
	Endpoints      []string
	User, Password string
	// Token is the cluster token the passwords derive from; empty: etcd's
	// authentication is off (a --no-auth head).
	Token string
	// MaxRequestBytes bounds one request; default DefaultMaxRequestBytes.
	MaxRequestBytes uint
	// TickMs, ElectionMs: default DefaultTickMs, DefaultElectionMs.
	TickMs, ElectionMs uint
	// CompactionRetention: default DefaultCompactionRetention; negative
	// turns auto-compaction off.
	CompactionRetention time.Duration
	// Logger (default slog.Default()); etcd's own log goes to stderr at
	// warn level and above.
	Logger *slog.Logger

	// Name and InitialCluster make the embedded member one of several (the
	// heads of a highly available cluster, docs/fault-tolerance.md):
	// InitialCluster lists every member as NAME=PEER_URL (etcd's
	// --initial-cluster, e.g. h1=http://10.0.0.1:2380,h2=…,h3=…), Name is
	// this member's, and PeerListen must be the host:port of its URL. A
	// member on a data dir that already holds the cluster rejoins it. Empty:
	// a single member named goray-head.
	Name           string
	InitialCluster string
}

// Members parses InitialCluster into member names and peer URLs, in order.
func (c *Config) Members() (names []string, peers []string, err error) {
	if c.InitialCluster == "" {
		return nil, nil, nil
	}
	for _, m := range strings.Split(c.InitialCluster, ",") {
		name, u, ok := strings.Cut(strings.TrimSpace(m), "=")
		pu, perr := url.Parse(u)
		if !ok || name == "" || perr != nil || pu.Scheme != "http" || pu.Port() == "" {
			return nil, nil, fmt.Errorf("coordination: initial cluster member %q: want NAME=http://HOST:PORT", m)
		}
		if slices.Contains(names, name) {
			return nil, nil, fmt.Errorf("coordination: initial cluster names member %q twice", name)
		}
		names, peers = append(names, name), append(peers, pu.Host)
	}
	return names, peers, nil
}

// Validate checks the configuration without touching the system.
func (c *Config) Validate() error {
	if len(c.Endpoints) > 0 {
		for _, e := range c.Endpoints {
			if _, err := url.Parse(e); err != nil || !strings.Contains(e, "://") {
				return fmt.Errorf("coordination: external etcd endpoint %q is not a URL like http://HOST:PORT", e)
			}
		}
		return nil
	}
	if c.Dir == "" {
		return errors.New("coordination: the embedded etcd member needs a data directory")
	}
	names, peers, err := c.Members()
	if err != nil {
		return err
	}
	if len(names) > 0 {
		i := slices.Index(names, c.Name)
		if i < 0 {
			return fmt.Errorf("coordination: this member's name %q is not in the initial cluster %s", c.Name, c.InitialCluster)
		}
		if c.PeerListen == "" || c.ClientListen == "" {
			return errors.New("coordination: a member of a cluster of several needs its client and peer listen addresses (--etcd-listen, --etcd-peer-listen)")
		}
		if c.PeerListen != peers[i] {
			return fmt.Errorf("coordination: this member's peer listen address %s is not its URL in the initial cluster (%s)", c.PeerListen, peers[i])
		}
	} else if c.Name != "" {
		return errors.New("coordination: a member name needs an initial cluster")
	}
	for _, a := range []string{c.ClientListen, c.PeerListen} {
		if a == "" {
			continue
		}
		if _, _, err := net.SplitHostPort(a); err != nil {
			return fmt.Errorf("coordination: listen address %q is not HOST:PORT: %v", a, err)
		}
	}
	if c.ClientListen != "" && !isLoopbackHost(c.ClientListen) && c.Token == "" {
		return fmt.Errorf("coordination: refusing to serve etcd on %s without authentication; give the cluster a token or listen on loopback", c.ClientListen)
	}
	if c.TickMs != 0 && c.ElectionMs != 0 && c.ElectionMs < 5*c.TickMs {
		return fmt.Errorf("coordination: election timeout %d ms must be at least 5 ticks (%d ms)", c.ElectionMs, c.TickMs)
	}
	return nil
}

// Passwords are the etcd users' passwords derived from a cluster token:
// hex(HMAC-SHA256(token, "goray etcd <user>")), 64 hex digits. Anyone with
// the token can derive them; nobody without it can.
func Passwords(token string) (root, rw, ro string) {
	d := func(user string) string {
		m := hmac.New(sha256.New, []byte(token))
		m.Write([]byte("goray etcd " + user))
		return hex.EncodeToString(m.Sum(nil))
	}
	return d(UserRoot), d(UserRW), d(UserRO)
}

// Engine is the running coordination engine. Its methods are safe for
// concurrent use; mu guards the lazily started member.
type Engine struct {
	cfg Config
	log *slog.Logger

	mu      sync.Mutex
	started bool
	etcd    *embed.Etcd      // nil for an external cluster
	admin   *clientv3.Client // root (or the external user), for the head
	eps     []string
	root    string
	rw, ro  string
	minTTL  time.Duration
	closed  bool
	// stopping silences etcd's log while the member stops.
	stopping atomic.Bool
	lastErr  error
}

// New makes an engine for cfg; Start (or the first GetCoordination) starts it.
func New(cfg Config) (*Engine, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.MaxRequestBytes == 0 {
		cfg.MaxRequestBytes = DefaultMaxRequestBytes
	}
	if cfg.TickMs == 0 {
		cfg.TickMs = DefaultTickMs
	}
	if cfg.ElectionMs == 0 {
		cfg.ElectionMs = DefaultElectionMs
	}
	if cfg.CompactionRetention == 0 {
		cfg.CompactionRetention = DefaultCompactionRetention
	}
	return &Engine{cfg: cfg, log: cfg.Logger.With("component", "coordination")}, nil
}

// Start starts the embedded member (or connects to the external cluster)
// and sets up its users; it returns at once if it already started.
func (e *Engine) Start(ctx context.Context) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.closed {
		return errs.New(errs.KindShuttingDown, "", "the head's coordination service is shutting down")
	}
	if e.started {
		return nil
	}
	var err error
	if len(e.cfg.Endpoints) > 0 {
		err = e.startExternal(ctx)
	} else {
		err = e.startEmbedded(ctx)
	}
	if err != nil {
		e.stopLocked()
		return err
	}
	e.started = true
	return nil
}

func (e *Engine) startExternal(ctx context.Context) error {
	e.eps = append([]string(nil), e.cfg.Endpoints...)
	e.rw, e.ro = e.cfg.Password, e.cfg.Password
	cli, err := clientv3.New(clientv3.Config{
		Endpoints: e.eps, Username: e.cfg.User, Password: e.cfg.Password,
		DialTimeout: 10 * time.Second, Logger: zap.NewNop(), Context: context.Background(),
	})
	if err != nil {
		return fmt.Errorf("coordination: connect to the external etcd at %s: %w", strings.Join(e.eps, ","), err)
	}
	e.admin = cli
	cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if _, err := cli.Get(cctx, "goray/probe"); err != nil {
		return fmt.Errorf("coordination: the external etcd at %s does not answer with the given credentials: %w", strings.Join(e.eps, ","), err)
	}
	e.minTTL = 2 * time.Second
	e.log.Info("coordination: using an external etcd cluster", "endpoints", e.eps)
	return nil
}

type keptURLs struct {
	Client string `json:"client"`
	Peer   string `json:"peer"`
}

func (e *Engine) startEmbedded(ctx context.Context) error {
	dir := filepath.Join(e.cfg.Dir, dirName)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("coordination: data dir: %w", err)
	}
	var kept keptURLs
	urlsFile := filepath.Join(dir, urlsFileName)
	if b, err := os.ReadFile(urlsFile); err == nil {
		if err := json.Unmarshal(b, &kept); err != nil {
			return fmt.Errorf("coordination: %s is damaged (%v); remove it to pick new ports", urlsFile, err)
		}
	}
	client, peer := e.cfg.ClientListen, e.cfg.PeerListen
	if client == "" {
		client = kept.Client
	}
	if peer == "" {
		peer = kept.Peer
	}
	var err error
	if client, err = concretePort(client); err != nil {
		return err
	}
	if peer, err = concretePort(peer); err != nil {
		return err
	}
	if b, err := json.Marshal(keptURLs{Client: client, Peer: peer}); err == nil {
		if err := os.WriteFile(urlsFile, b, 0o600); err != nil {
			return fmt.Errorf("coordination: %w", err)
		}
	}
	cu, pu := url.URL{Scheme: "http", Host: client}, url.URL{Scheme: "http", Host: peer}
	ec := embed.NewConfig()
	ec.Name = memberName
	ec.Dir = filepath.Join(dir, "member")
	ec.ListenClientUrls, ec.AdvertiseClientUrls = []url.URL{cu}, []url.URL{advertise(cu)}
	ec.ListenPeerUrls, ec.AdvertisePeerUrls = []url.URL{pu}, []url.URL{pu}
	ec.InitialCluster = ec.InitialClusterFromName(memberName)
	if e.cfg.InitialCluster != "" {
		ec.Name, ec.InitialCluster = e.cfg.Name, e.cfg.InitialCluster
		// The cluster token keeps members of different clusters listed
		// with the same peer URLs apart.
		ec.InitialClusterToken = "goray-" + e.cfg.InitialCluster
	}
	ec.TickMs, ec.ElectionMs = e.cfg.TickMs, e.cfg.ElectionMs
	ec.MaxRequestBytes = e.cfg.MaxRequestBytes
	// The passwords are 256-bit secrets derived from the token, not words a
	// person picked: bcrypt's work factor buys nothing against guessing
	// them and costs every client's connect (etcd's default is 10).
	ec.BcryptCost = uint(bcrypt.MinCost)
	if e.cfg.CompactionRetention > 0 {
		ec.AutoCompactionMode = embed.CompactorModePeriodic
		ec.AutoCompactionRetention = e.cfg.CompactionRetention.String()
	}
	e.stopping.Store(false)
	ec.ZapLoggerBuilder = embed.NewZapLoggerBuilder(etcdLogger(&e.stopping))
	ec.Logger = "zap"
	e.etcd, err = embed.StartEtcd(ec)
	if err != nil {
		return fmt.Errorf("coordination: start the embedded etcd member in %s: %w", dir, err)
	}
	select {
	case <-e.etcd.Server.ReadyNotify():
	case err := <-e.etcd.Err():
		return fmt.Errorf("coordination: the embedded etcd member failed: %w", err)
	case <-time.After(startTimeout):
		return fmt.Errorf("coordination: the embedded etcd member in %s was not ready within %s", dir, startTimeout)
	case <-ctx.Done():
		return errs.Context(ctx.Err(), "start the embedded etcd member")
	}
	adv := advertise(cu)
	// The head's own clients talk to this member only: a request the
	// client balancer sent to another member that is paused would hang
	// with it, and when this member is down its head is down too. (Info
	// hands out every member's URL.)
	e.eps = []string{adv.String()}
	// etcd's shortest lease: 1.5 election timeouts.
	e.minTTL = time.Duration(3*e.cfg.ElectionMs/2) * time.Millisecond
	if e.cfg.Token != "" {
		e.root, e.rw, e.ro = Passwords(e.cfg.Token)
		if err := e.setupAuth(ctx); err != nil {
			return err
		}
	} else {
		e.log.Warn("coordination: etcd's authentication is OFF (the head has no token): any local process can read and write the cluster's keys")
	}
	if e.admin == nil {
		if e.admin, err = e.dial(ctx, "", ""); err != nil {
			return err
		}
	}
	e.log.Info("coordination: embedded etcd member ready", "endpoint", e.eps[0], "dir", dir, "auth", e.cfg.Token != "")
	return nil
}

// setupAuth makes the users and roles and turns etcd's authentication on; on
// a member whose data already has them (a restarted head), it checks that
// the root password still fits (the same token).
func (e *Engine) setupAuth(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	anon, err := e.dial(ctx, "", "")
	if err != nil {
		return err
	}
	st, err := anon.AuthStatus(ctx)
	if err != nil {
		anon.Close()
		return fmt.Errorf("coordination: etcd auth status: %w", err)
	}
	if !st.Enabled {
		err = e.createUsers(ctx, anon)
		if err != nil {
			// Another member of the cluster may have set them up (and
			// turned auth on) at the same time.
			if st, serr := anon.AuthStatus(ctx); serr == nil && st.Enabled {
				err = nil
			}
		}
		anon.Close()
		if err != nil {
			return fmt.Errorf("coordination: set up etcd's users: %w", err)
		}
	} else {
		anon.Close()
	}
	if e.admin, err = e.dial(ctx, UserRoot, e.root); err != nil {
		return fmt.Errorf("coordination: the etcd data in %s was set up with another cluster token (%w); start the head with that token, or remove %s to start afresh",
			filepath.Join(e.cfg.Dir, dirName), err, filepath.Join(e.cfg.Dir, dirName))
	}
	if _, err := e.admin.AuthStatus(ctx); err != nil {
		return fmt.Errorf("coordination: the etcd data in %s was set up with another cluster token (%w); start the head with that token, or remove %s to start afresh",
			filepath.Join(e.cfg.Dir, dirName), err, filepath.Join(e.cfg.Dir, dirName))
	}
	return nil
}

func (e *Engine) createUsers(ctx context.Context, c *clientv3.Client) error {
	users := []struct{ user, pass, role string }{
		{UserRoot, e.root, "root"},
		{UserRW, e.rw, roleRW},
		{UserRO, e.ro, roleRO},
	}
	for _, r := range []string{"root", roleRW, roleRO} {
		if _, err := c.RoleAdd(ctx, r); err != nil && !strings.Contains(err.Error(), "already exists") {
			return fmt.Errorf("add role %s: %w", r, err)
		}
	}
	// Every key: from "\x00" to the end of the keyspace.
	all, end := "\x00", "\x00"
	if _, err := c.RoleGrantPermission(ctx, roleRW, all, end, clientv3.PermissionType(clientv3.PermReadWrite)); err != nil {
		return fmt.Errorf("grant %s: %w", roleRW, err)
	}
	if _, err := c.RoleGrantPermission(ctx, roleRO, all, end, clientv3.PermissionType(clientv3.PermRead)); err != nil {
		return fmt.Errorf("grant %s: %w", roleRO, err)
	}
	for _, u := range users {
		if _, err := c.UserAdd(ctx, u.user, u.pass); err != nil {
			if !strings.Contains(err.Error(), "already exists") {
				return fmt.Errorf("add user %s: %w", u.user, err)
			}
			if _, err := c.UserChangePassword(ctx, u.user, u.pass); err != nil {
				return fmt.Errorf("set the password of %s: %w", u.user, err)
			}
		}
		if _, err := c.UserGrantRole(ctx, u.user, u.role); err != nil {
			return fmt.Errorf("grant %s to %s: %w", u.role, u.user, err)
		}
	}
	if _, err := c.AuthEnable(ctx); err != nil {
		return fmt.Errorf("enable auth: %w", err)
	}
	return nil
}

func (e *Engine) dial(ctx context.Context, user, pass string) (*clientv3.Client, error) {
	c, err := clientv3.New(clientv3.Config{
		Endpoints: e.eps, Username: user, Password: pass, DialTimeout: 10 * time.Second,
		Logger: zap.NewNop(), Context: context.Background(),
		MaxCallSendMsgSize: int(e.cfg.MaxRequestBytes) + 64*1024,
	})
	if err != nil {
		return nil, fmt.Errorf("coordination: connect to etcd at %s: %w", strings.Join(e.eps, ","), err)
	}
	return c, nil
}

// Admin is the head's own client (etcd's root user, or the external
// cluster's user): for the head's tables (issue 13), compaction and tests.
// Nil before Start.
func (e *Engine) Admin() *clientv3.Client {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.admin
}

// Info is how to reach the engine.
type Info struct {
	Endpoints []string
	// User and Password: empty when auth is off.
	User, Password     string
	ROUser, ROPassword string
	MaxRequestBytes    int64
	MinLeaseTTL        time.Duration
	Embedded           bool
}

// Info says how to reach the started engine.
func (e *Engine) Info() Info {
	e.mu.Lock()
	defer e.mu.Unlock()
	eps := append([]string(nil), e.eps...)
	if e.etcd != nil {
		// The members of a cluster of several publish their client URLs
		// as they start: list every one known now, this member's first.
		for _, m := range e.etcd.Server.Cluster().Members() {
			for _, u := range m.ClientURLs {
				if !slices.Contains(eps, u) {
					eps = append(eps, u)
				}
			}
		}
	}
	in := Info{Endpoints: eps, MaxRequestBytes: int64(e.cfg.MaxRequestBytes), MinLeaseTTL: e.minTTL, Embedded: e.etcd != nil}
	switch {
	case e.etcd == nil:
		in.User, in.Password, in.ROUser, in.ROPassword = e.cfg.User, e.cfg.Password, e.cfg.User, e.cfg.Password
	case e.cfg.Token != "":
		in.User, in.Password, in.ROUser, in.ROPassword = UserRW, e.rw, UserRO, e.ro
	}
	return in
}

// Register registers the engine's CoordinationService on srv.
func (e *Engine) Register(srv *grpc.Server) { pb.RegisterCoordinationServiceServer(srv, e) }

// GetCoordination serves CoordinationService.GetCoordination: it starts
// the engine if it was not started (the embedded default) and says how to
// reach it.
func (e *Engine) GetCoordination(ctx context.Context, req *pb.GetCoordinationRequest) (*pb.GetCoordinationResponse, error) {
	if err := e.Start(ctx); err != nil {
		var ge *errs.Error
		if errors.As(err, &ge) {
			return nil, ge
		}
		return nil, errs.New(errs.KindUnavailable, "", "%v", err)
	}
	in := e.Info()
	resp := &pb.GetCoordinationResponse{Endpoints: in.Endpoints, User: in.User, Password: in.Password,
		MaxRequestBytes: in.MaxRequestBytes, MinLeaseTtlMs: in.MinLeaseTTL.Milliseconds()}
	if req.GetReadOnly() {
		resp.User, resp.Password = in.ROUser, in.ROPassword
	}
	return resp, nil
}

// Close stops the member (or disconnects from the external cluster). It is
// idempotent.
func (e *Engine) Close() {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.closed = true
	e.stopLocked()
}

func (e *Engine) stopLocked() {
	if e.admin != nil {
		e.admin.Close()
		e.admin = nil
	}
	if e.etcd != nil {
		e.stopping.Store(true)
		e.etcd.Close()
		<-e.etcd.Server.StopNotify()
		e.etcd = nil
	}
	e.started = false
}

// EnvFile is the text of a credentials file: etcdctl's environment
// variables (ETCDCTL_ENDPOINTS, ETCDCTL_USER as user:password), one per
// line, so that `set -a; . FILE; set +a; etcdctl get k` works. Without a
// user (auth off) the ETCDCTL_USER line is left out.
func EnvFile(endpoints []string, user, pass string) string {
	s := "ETCDCTL_ENDPOINTS=" + strings.Join(endpoints, ",") + "\n"
	if user != "" {
		s += "ETCDCTL_USER=" + user + ":" + pass + "\n"
	}
	return s
}

// concretePort turns "" or HOST:0 into HOST:<a free port>; etcd's single
// member needs a fixed peer URL in its initial cluster, and a restarted head
// the same client URL.
func concretePort(addr string) (string, error) {
	if addr == "" {
		addr = "127.0.0.1:0"
	}
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return "", fmt.Errorf("coordination: listen address %q: %w", addr, err)
	}
	if port != "0" {
		return addr, nil
	}
	l, err := net.Listen("tcp", net.JoinHostPort(host, "0"))
	if err != nil {
		return "", fmt.Errorf("coordination: find a free port on %s: %w", host, err)
	}
	defer l.Close()
	return l.Addr().String(), nil
}

// advertise is the URL clients use for a listen URL: a wildcard host is
// advertised as the machine's first non-loopback address, as the head's own
// address is (rpc.AdvertiseAddr), so processes on other nodes reach it.
func advertise(u url.URL) url.URL {
	host, port, err := net.SplitHostPort(u.Host)
	if err == nil && (host == "" || host == "0.0.0.0" || host == "::") {
		p, _ := strconv.Atoi(port)
		u.Host = rpc.AdvertiseAddr(&net.TCPAddr{IP: net.IPv4zero, Port: p})
	}
	return u
}

func isLoopbackHost(addr string) bool {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return false
	}
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// etcdLogger is etcd's own logger: errors to stderr, one JSON line each
// (etcd's format), so that a head's log stays readable; nothing once the
// member is stopping (etcd reports its listeners closing as errors).
func etcdLogger(stopping *atomic.Bool) *zap.Logger {
	enc := zap.NewProductionEncoderConfig()
	enc.EncodeTime = zapcore.ISO8601TimeEncoder
	level := zap.LevelEnablerFunc(func(l zapcore.Level) bool { return l >= zapcore.ErrorLevel && !stopping.Load() })
	core := zapcore.NewCore(zapcore.NewJSONEncoder(enc), zapcore.Lock(os.Stderr), level)
	return zap.New(core).With(zap.String("component", "etcd"))
}
