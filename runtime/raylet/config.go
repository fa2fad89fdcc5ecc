package raylet

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"syscall"
	"time"

	"github.com/goray/goray/internal/rpc"
)

// DefaultListen is the listen address used when Config.Listen is empty: an
// ephemeral port on loopback.
const DefaultListen = "127.0.0.1:0"

// Environment variables a joining raylet reads its token from (see
// Config.TokenFile).
const (
	EnvToken     = "GORAY_TOKEN"
	EnvTokenFile = "GORAY_TOKEN_FILE"
)

// Bounds on what a raylet accepts.
const (
	maxResourceNames   = 64
	maxResourceNameLen = 128
)

// Config configures a raylet. The zero value of every field but Head/Address
// has a documented default.
type Config struct {
	// Head also runs the head (scheduler) in this process, on the same gRPC
	// server and port.
	Head bool
	// NoNode (with Head only) runs the head alone: no node registers, no
	// worker starts, and the process serves only the head's services — the
	// shape in which a head can be restarted without taking a node's
	// workers with it (Ray's GCS). Drivers then connect to a raylet.
	NoNode bool
	// Address is the head address to join (HOST:PORT). Required unless Head;
	// must be empty with Head.
	Address string
	// Listen is where the raylet's gRPC server listens. Default DefaultListen.
	Listen string
	// Resources is the node's total logical resources, merged over the
	// defaults {"CPU": runtime.NumCPU(), "memory": total RAM in bytes}.
	Resources map[string]float64
	// Token is the cluster token. With Head, empty Token and !NoAuth a fresh
	// one is generated. When joining with empty Token it is read from
	// TokenFile, else the GORAY_TOKEN environment variable, else the file
	// named by GORAY_TOKEN_FILE, else rpc.DefaultTokenPath(Address).
	Token string
	// TokenFile: with Head, where the token is written (mode 0600); default
	// rpc.DefaultTokenPath(actual listen address). When joining, where the
	// token is read from (see Token).
	TokenFile string
	// NoAuth disables authentication (a loud warning is logged); listening on
	// a non-loopback address is then refused.
	NoAuth bool
	// DataDir holds job binaries, worker working directories and the head's
	// state. Default: a fresh directory under rpc.RuntimeDir(), removed on Stop.
	// A directory given here is kept; only what the raylet put in it (jobs/)
	// is removed on Stop. A head given a DataDir keeps its tables in
	// DataDir/head/state.db (scheduler.BoltStore) and its token in
	// DataDir/head/token, so it can be restarted on the same DataDir without
	// losing its cluster; without one it keeps them in memory.
	DataDir string
	// StoreDir is the node's object store directory. Default: a fresh
	// directory under store.BaseDir(DataDir) (/dev/shm when it exists),
	// removed on Stop. A directory given here is kept; the objects the raylet
	// recorded in it are removed on Stop.
	StoreDir string
	// ObjectStoreMemory is the size of the node's shared-memory arena
	// (StoreDir/arena), where objects are written once and read in place;
	// objects that do not fit go to files of their own. Its pages are faulted
	// in when first used and then recycled. Default: the environment variable
	// GORAY_OBJECT_STORE_MEMORY (bytes) when set, else min(25% of RAM, 2 GiB).
	// Negative: no arena.
	ObjectStoreMemory int64
	// ObjectStorePrefault faults the whole arena in at start (in the
	// background), so that no put pays for fresh pages. Default: the
	// environment variable GORAY_OBJECT_STORE_PREFAULT=1.
	ObjectStorePrefault bool
	// MaxWorkersPerJob bounds the task (leased) workers of one job on this
	// node. Default runtime.NumCPU().
	MaxWorkersPerJob int
	// HeartbeatInterval and NodeTimeout configure the head (with Head only):
	// how often raylets heartbeat, and how long a silent node stays alive in
	// the head's table. Defaults scheduler.DefaultHeartbeatInterval and
	// scheduler.DefaultNodeTimeout.
	HeartbeatInterval, NodeTimeout time.Duration
	// DriverReconnectTimeout (with Head only) is how long a restarted head
	// waits for a running job's driver to reconnect before it finishes the
	// job. Default scheduler.DefaultDriverReconnectTimeout.
	DriverReconnectTimeout time.Duration
	// Logger receives the raylet's structured logs. Default slog.Default().
	Logger *slog.Logger
	// HeadServices are further services a head serves on its port (see
	// HeadService); ignored without Head. Default none.
	HeadServices []HeadServiceFunc
	// Stdout and Stderr receive the worker processes' stdout and stderr, line
	// by line, prefixed "(worker pid=N) ". Stderr defaults to os.Stderr;
	// Stdout defaults to Stderr.
	Stdout, Stderr io.Writer
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
	if c.Address != "" {
		if _, _, err := net.SplitHostPort(c.Address); err != nil {
			return fmt.Errorf("raylet config: head address %q is not HOST:PORT: %w", c.Address, err)
		}
	}
	listen := c.Listen
	if listen == "" {
		listen = DefaultListen
	}
	if _, _, err := net.SplitHostPort(listen); err != nil {
		return fmt.Errorf("raylet config: listen address %q is not HOST:PORT: %w", listen, err)
	}
	if err := rpc.CheckListen(listen, !c.NoAuth); err != nil {
		return fmt.Errorf("raylet config: %w", err)
	}
	if c.NoAuth && c.Token != "" {
		return errors.New("raylet config: a token was given together with --no-auth; drop one of them")
	}
	if len(c.Resources) > maxResourceNames {
		return fmt.Errorf("raylet config: %d resources, at most %d allowed", len(c.Resources), maxResourceNames)
	}
	for name, v := range c.Resources {
		if err := checkResource(name, v); err != nil {
			return fmt.Errorf("raylet config: %w", err)
		}
	}
	if c.HeartbeatInterval < 0 || c.NodeTimeout < 0 || c.DriverReconnectTimeout < 0 {
		return fmt.Errorf("raylet config: HeartbeatInterval %s, NodeTimeout %s and DriverReconnectTimeout %s must not be negative",
			c.HeartbeatInterval, c.NodeTimeout, c.DriverReconnectTimeout)
	}
	if c.MaxWorkersPerJob < 0 {
		return fmt.Errorf("raylet config: MaxWorkersPerJob is %d, want >= 0 (0 means NumCPU)", c.MaxWorkersPerJob)
	}
	return nil
}

func checkResource(name string, v float64) error {
	if name == "" {
		return errors.New("resource with an empty name")
	}
	if len(name) > maxResourceNameLen {
		return fmt.Errorf("resource name %.32q... is longer than %d bytes", name, maxResourceNameLen)
	}
	if math.IsNaN(v) || math.IsInf(v, 0) || v < 0 {
		return fmt.Errorf("resource %q has amount %v, want a finite number >= 0", name, v)
	}
	return nil
}

// withDefaults returns c with every default filled in (directories and the
// token are resolved by Start).
func (c Config) withDefaults() Config {
	if c.Listen == "" {
		c.Listen = DefaultListen
	}
	// Worker binaries live under DataDir and start with their own working
	// directory, so relative paths would resolve against the wrong one.
	for _, p := range []*string{&c.DataDir, &c.StoreDir, &c.TokenFile} {
		if *p != "" {
			if abs, err := filepath.Abs(*p); err == nil {
				*p = abs
			}
		}
	}
	res := defaultResources()
	for k, v := range c.Resources {
		res[k] = v
	}
	c.Resources = res
	if c.ObjectStoreMemory == 0 {
		c.ObjectStoreMemory = defaultObjectStoreMemory()
	}
	if !c.ObjectStorePrefault && os.Getenv("GORAY_OBJECT_STORE_PREFAULT") == "1" {
		c.ObjectStorePrefault = true
	}
	if c.MaxWorkersPerJob == 0 {
		c.MaxWorkersPerJob = max(1, runtime.NumCPU())
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	if c.Stderr == nil {
		c.Stderr = os.Stderr
	}
	if c.Stdout == nil {
		c.Stdout = c.Stderr
	}
	return c
}

// defaultObjectStoreMemory is Config.ObjectStoreMemory's default.
func defaultObjectStoreMemory() int64 {
	if v := os.Getenv("GORAY_OBJECT_STORE_MEMORY"); v != "" {
		if n, err := strconv.ParseInt(v, 10, 64); err == nil {
			if n == 0 {
				return -1
			}
			return n
		}
	}
	n := int64(2 << 30)
	var si syscall.Sysinfo_t
	if err := syscall.Sysinfo(&si); err == nil {
		n = min(n, int64(si.Totalram)*int64(si.Unit)/4)
	}
	return n
}

func defaultResources() map[string]float64 {
	res := map[string]float64{"CPU": float64(runtime.NumCPU())}
	var si syscall.Sysinfo_t
	if err := syscall.Sysinfo(&si); err == nil {
		res["memory"] = float64(si.Totalram) * float64(si.Unit)
	}
	return res
}
