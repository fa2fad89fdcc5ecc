package scheduler

import (
	"errors"
	"log/slog"
	"time"
)

// Defaults of Config.
const (
	DefaultHeartbeatInterval = time.Second
	DefaultNodeTimeout       = 10 * time.Second
	DefaultMaxBinarySize     = 1 << 30
	// DefaultDriverReconnectTimeout is how long a restarted head waits for
	// the driver of a running job to open KeepJobAlive again.
	DefaultDriverReconnectTimeout = 30 * time.Second
)

// Config configures a Server.
type Config struct {
	// DataDir is where the head keeps its files; job binaries are stored as
	// DataDir/binaries/<sha256 hex>. Required.
	DataDir string
	// Token is the cluster token sent when dialing raylets ("" = auth off).
	Token string
	// HeartbeatInterval is returned to raylets in RegisterNodeResponse.
	// Default 1s.
	HeartbeatInterval time.Duration
	// NodeTimeout is how long a node may go without a heartbeat before it is
	// declared dead. Default 10s; must exceed HeartbeatInterval.
	NodeTimeout time.Duration
	// MaxBinarySize bounds an uploaded job binary in bytes. Default 1 GiB.
	MaxBinarySize int64
	// Logger receives the head's structured logs. Default slog.Default().
	Logger *slog.Logger
	// Store holds the node, job, actor and placement group tables. Default:
	// a new MemoryStore. A persistent one (OpenBoltStore) lets the head
	// restart without losing them; the Server does not close it.
	Store Store
	// DriverReconnectTimeout is how long, after the Server starts on a store
	// that holds running jobs (a head restart), a job's driver has to open
	// KeepJobAlive again before the job is finished as if its driver went
	// away. Default DefaultDriverReconnectTimeout.
	DriverReconnectTimeout time.Duration
	// Binaries, when set, mirrors the job binaries for the other heads of a
	// cluster of several (EtcdBinaries); nil: they live in DataDir alone.
	Binaries BinaryMirror
	// Epoch and Leads are the leadership term of a head of several: the
	// head sends Epoch with its commands to raylets (which refuse a
	// deposed leader's), and sends nothing once Leads says the term no
	// longer surely holds. Zero and nil for a single head.
	Epoch int64
	Leads func() bool
}

// Validate fills in defaults and checks the configuration.
func (c *Config) Validate() error {
	if c.DataDir == "" {
		return errors.New("scheduler: Config.DataDir is required")
	}
	if c.HeartbeatInterval == 0 {
		c.HeartbeatInterval = DefaultHeartbeatInterval
	}
	if c.NodeTimeout == 0 {
		c.NodeTimeout = DefaultNodeTimeout
	}
	if c.MaxBinarySize == 0 {
		c.MaxBinarySize = DefaultMaxBinarySize
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	if c.DriverReconnectTimeout == 0 {
		c.DriverReconnectTimeout = DefaultDriverReconnectTimeout
	}
	if c.Store == nil {
		c.Store = NewMemoryStore()
	}
	switch {
	case c.HeartbeatInterval < 0:
		return errors.New("scheduler: Config.HeartbeatInterval must be positive")
	case c.HeartbeatInterval.Milliseconds() > int64(^uint32(0)):
		return errors.New("scheduler: Config.HeartbeatInterval is too long")
	case c.NodeTimeout <= c.HeartbeatInterval:
		return errors.New("scheduler: Config.NodeTimeout must be longer than Config.HeartbeatInterval")
	case c.DriverReconnectTimeout < 0:
		return errors.New("scheduler: Config.DriverReconnectTimeout must be positive")
	case c.MaxBinarySize < 0:
		return errors.New("scheduler: Config.MaxBinarySize must be positive")
	}
	return nil
}
