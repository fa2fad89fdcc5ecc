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
	"strings"
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

// Memory monitor defaults and bounds (see Config.MemoryUsageThreshold).
const (
	DefaultMemoryUsageThreshold  = 0.95
	DefaultMemoryMonitorInterval = 250 * time.Millisecond
	minMemoryMonitorInterval     = 10 * time.Millisecond
)

// Environment variables of the memory monitor's defaults.
const (
	EnvMemoryUsageThreshold  = "GORAY_MEMORY_USAGE_THRESHOLD"
	EnvMemoryLimit           = "GORAY_MEMORY_LIMIT"
	EnvMemoryMonitorInterval = "GORAY_MEMORY_MONITOR_INTERVAL"
)

// Bounds on what a raylet accepts.
const (
	maxResourceNames   = 64
	maxResourceNameLen = 128
)

// Config configures a raylet. The zero value of every field but Address has
// a documented default. A raylet never runs the head itself: package
// internal/embed puts a head and a raylet on one server (`raylet --head`).
type Config struct {
	// Address is the head address to join (HOST:PORT). Required by Start
	// and Join.
	Address string
	// HeadNode marks the node that shares its process and port with the
	// head (`raylet --head`): it registers as the head's node, and it is
	// never retired, since its process is the head's.
	HeadNode bool
	// Listen is where the raylet's gRPC server listens. Default DefaultListen.
	Listen string
	// Resources is the node's total logical resources, merged over the
	// defaults {"CPU": runtime.NumCPU(), "memory": total RAM in bytes}.
	Resources map[string]float64
	// Token is the cluster token. When empty (and !NoAuth) it is read from
	// TokenFile, else the GORAY_TOKEN environment variable, else the file
	// named by GORAY_TOKEN_FILE, else rpc.DefaultTokenPath(Address).
	Token string
	// TokenFile is where the token is read from (see Token).
	TokenFile string
	// NoAuth disables authentication (a loud warning is logged); listening on
	// a non-loopback address is then refused.
	NoAuth bool
	// DataDir holds job binaries and worker working directories. Default: a
	// fresh directory under rpc.RuntimeDir(), removed on Stop. A directory
	// given here is kept; only what the raylet put in it (jobs/) is removed
	// on Stop.
	DataDir string
	// StoreDir is the node's object store directory. Default: a fresh
	// directory under store.BaseDir(DataDir) (/dev/shm when it exists),
	// removed on Stop. A directory given here is kept; the objects the raylet
	// recorded in it are removed on Stop.
	StoreDir string
	// ObjectStoreMemory is the size of the node's shared-memory arena
	// (StoreDir/arena), where objects are written once and read in place,
	// and the store's capacity: past ObjectSpillingThreshold of it, and
	// whenever an object does not fit, secondary copies are evicted and
	// primary copies spilled to ObjectSpillingDir (least recently used
	// first); a value larger than it fails with ErrObjectStoreFull. Its pages
	// are faulted in when first used and then recycled. Default: the
	// environment variable GORAY_OBJECT_STORE_MEMORY (bytes, or with a unit:
	// 256MiB, 2GB) when set, else min(25% of RAM, 2 GiB). Negative (or
	// GORAY_OBJECT_STORE_MEMORY=0): no arena; objects are files of their own
	// in StoreDir, with no capacity and no spilling.
	ObjectStoreMemory int64
	// ObjectSpillingThreshold is the fraction of the capacity past which the
	// raylet starts evicting and spilling in the background (Ray's
	// object_spilling_threshold), in (0, 1]. Default: the environment
	// variable GORAY_OBJECT_SPILLING_THRESHOLD when set, else 0.8.
	ObjectSpillingThreshold float64
	// ObjectSpillingDir is where spilled objects go: the raylet makes a
	// directory of its own in it (removed on Stop). It should be on disk, not
	// in /dev/shm. Default: the environment variable GORAY_OBJECT_SPILLING_DIR
	// when set, else DataDir/spill.
	ObjectSpillingDir string
	// ObjectStorePrefault faults the whole arena in at start (in the
	// background), so that no put pays for fresh pages. Default: the
	// environment variable GORAY_OBJECT_STORE_PREFAULT=1.
	ObjectStorePrefault bool
	// MaxWorkersPerJob bounds the task (leased) workers of one job on this
	// node. Default runtime.NumCPU().
	MaxWorkersPerJob int
	// MemoryUsageThreshold is the fraction of the node's memory in use (the
	// machine's: MemTotal minus MemAvailable; or the raylet's cgroup's, when
	// its limit is lower and it is fuller) above which the memory monitor
	// kills a worker. Default: the environment variable
	// GORAY_MEMORY_USAGE_THRESHOLD when set, else 0.95 (Ray's
	// memory_usage_threshold). Bounds [0, 1]; 0 means the default, 1 turns
	// this check off.
	MemoryUsageThreshold float64
	// MemoryLimit bounds, in bytes, the private memory (summed RssAnon) of
	// the node's worker processes; past it the memory monitor kills a
	// worker. Default: the environment variable GORAY_MEMORY_LIMIT (bytes)
	// when set, else 0: no such bound. Bounds >= 0.
	MemoryLimit int64
	// MemoryMonitorInterval is how often the memory monitor checks. Default:
	// the environment variable GORAY_MEMORY_MONITOR_INTERVAL (a Go
	// duration, e.g. 250ms) when set, else DefaultMemoryMonitorInterval
	// (Ray's memory_monitor_refresh_ms). Negative turns the monitor off;
	// otherwise at least minMemoryMonitorInterval.
	MemoryMonitorInterval time.Duration
	// Logger receives the raylet's structured logs. Default slog.Default().
	Logger *slog.Logger
	// Stdout and Stderr receive the worker processes' stdout and stderr, line
	// by line, prefixed "(worker pid=N) ". Stderr defaults to os.Stderr;
	// Stdout defaults to Stderr.
	Stdout, Stderr io.Writer
}

// Validate checks the configuration without touching the system. An empty
// Address passes (a head's own node learns it when the head listens); Start
// and Join need one.
func (c *Config) Validate() error {
	for _, a := range rpc.SplitAddresses(c.Address) {
		if _, _, err := net.SplitHostPort(a); err != nil {
			return fmt.Errorf("raylet config: head address %q is not HOST:PORT (or several, separated by commas): %w", a, err)
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
	if t := c.ObjectSpillingThreshold; t != 0 && (math.IsNaN(t) || t <= 0 || t > 1) {
		return fmt.Errorf("raylet config: ObjectSpillingThreshold is %v, want a fraction of the store's capacity in (0, 1] (default %v)", t, DefaultSpillingThreshold)
	}
	if c.MaxWorkersPerJob < 0 {
		return fmt.Errorf("raylet config: MaxWorkersPerJob is %d, want >= 0 (0 means NumCPU)", c.MaxWorkersPerJob)
	}
	if _, err := c.memoryDefaults(); err != nil {
		return fmt.Errorf("raylet config: %w", err)
	}
	return nil
}

// memoryDefaults is c with the memory monitor's defaults filled in, or an
// error naming the setting (field or environment variable) out of bounds.
func (c Config) memoryDefaults() (Config, error) {
	if v := os.Getenv(EnvMemoryUsageThreshold); v != "" && c.MemoryUsageThreshold == 0 {
		f, err := strconv.ParseFloat(v, 64)
		if err != nil || f <= 0 || f > 1 {
			return c, fmt.Errorf("%s=%q: want a fraction in (0, 1], e.g. 0.95", EnvMemoryUsageThreshold, v)
		}
		c.MemoryUsageThreshold = f
	}
	if v := os.Getenv(EnvMemoryLimit); v != "" && c.MemoryLimit == 0 {
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil || n < 0 {
			return c, fmt.Errorf("%s=%q: want a number of bytes >= 0", EnvMemoryLimit, v)
		}
		c.MemoryLimit = n
	}
	if v := os.Getenv(EnvMemoryMonitorInterval); v != "" && c.MemoryMonitorInterval == 0 {
		d, err := time.ParseDuration(v)
		if err != nil {
			return c, fmt.Errorf("%s=%q: want a duration such as 250ms (negative: no monitor)", EnvMemoryMonitorInterval, v)
		}
		c.MemoryMonitorInterval = d
	}
	switch t := c.MemoryUsageThreshold; {
	case math.IsNaN(t) || t < 0 || t > 1:
		return c, fmt.Errorf("memory usage threshold is %v, want a fraction in [0, 1] (0: the default %v; 1: no such check)", t, DefaultMemoryUsageThreshold)
	case t == 0:
		c.MemoryUsageThreshold = DefaultMemoryUsageThreshold
	}
	if c.MemoryLimit < 0 {
		return c, fmt.Errorf("memory limit is %d bytes, want >= 0 (0: no limit)", c.MemoryLimit)
	}
	switch d := c.MemoryMonitorInterval; {
	case d == 0:
		c.MemoryMonitorInterval = DefaultMemoryMonitorInterval
	case d > 0 && d < minMemoryMonitorInterval:
		return c, fmt.Errorf("memory monitor interval is %s, want at least %s (or negative: no monitor)", d, minMemoryMonitorInterval)
	}
	return c, nil
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
	if c.ObjectSpillingDir == "" {
		c.ObjectSpillingDir = os.Getenv("GORAY_OBJECT_SPILLING_DIR")
	}
	for _, p := range []*string{&c.DataDir, &c.StoreDir, &c.TokenFile, &c.ObjectSpillingDir} {
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
	if c.ObjectSpillingThreshold == 0 {
		c.ObjectSpillingThreshold = DefaultSpillingThreshold
		if v := os.Getenv("GORAY_OBJECT_SPILLING_THRESHOLD"); v != "" {
			if f, err := strconv.ParseFloat(v, 64); err == nil && f > 0 && f <= 1 {
				c.ObjectSpillingThreshold = f
			}
		}
	}
	if !c.ObjectStorePrefault && os.Getenv("GORAY_OBJECT_STORE_PREFAULT") == "1" {
		c.ObjectStorePrefault = true
	}
	if c.MaxWorkersPerJob == 0 {
		c.MaxWorkersPerJob = max(1, runtime.NumCPU())
	}
	if mc, err := c.memoryDefaults(); err == nil { // Validate reported errors
		c = mc
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

// DefaultSpillingThreshold is Config.ObjectSpillingThreshold's default.
const DefaultSpillingThreshold = 0.8

// ParseSize parses a byte size: a number of bytes, or a number with a unit
// (B, KB, MB, GB, TB: powers of 1000; KiB, MiB, GiB, TiB: powers of 1024;
// case-insensitive), such as 256MiB or 1.5GB.
func ParseSize(s string) (int64, error) {
	t := strings.TrimSpace(s)
	i := len(t)
	for i > 0 && (t[i-1] < '0' || t[i-1] > '9') && t[i-1] != '.' {
		i--
	}
	num, unit := strings.TrimSpace(t[:i]), strings.ToLower(strings.TrimSpace(t[i:]))
	mult := map[string]float64{"": 1, "b": 1, "kb": 1e3, "mb": 1e6, "gb": 1e9, "tb": 1e12,
		"kib": 1 << 10, "mib": 1 << 20, "gib": 1 << 30, "tib": 1 << 40, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30}[unit]
	if mult == 0 {
		return 0, fmt.Errorf("size %q: unknown unit %q (use B, KB, MB, GB, KiB, MiB or GiB)", s, unit)
	}
	if unit == "" {
		if n, err := strconv.ParseInt(num, 10, 64); err == nil {
			return n, nil
		}
	}
	f, err := strconv.ParseFloat(num, 64)
	if err != nil || math.IsNaN(f) || math.IsInf(f, 0) || math.Abs(f*mult) >= math.MaxInt64 {
		return 0, fmt.Errorf("size %q: want a number of bytes, optionally with a unit, such as 268435456 or 256MiB", s)
	}
	return int64(f * mult), nil
}

// defaultObjectStoreMemory is Config.ObjectStoreMemory's default.
func defaultObjectStoreMemory() int64 {
	if v := os.Getenv("GORAY_OBJECT_STORE_MEMORY"); v != "" {
		if n, err := ParseSize(v); err == nil {
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
