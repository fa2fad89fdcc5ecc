// Package runtime connects a Go program to a goray cluster.
//
// A driver calls Init first thing in main, after its actor types and task
// functions are registered (at package level):
//
//	func main() {
//		ctx := context.Background()
//		if err := runtime.Init(ctx); err != nil { log.Fatal(err) }
//		defer runtime.Shutdown()
//		...
//	}
//
// Init connects to the cluster named by WithAddress or GORAY_ADDRESS; with
// neither it starts an embedded head and raylet inside the program, so
// `go run` needs no cluster. The same binary is started by raylets as a
// worker process: there Init never returns, it serves tasks and hosts actors.
package runtime

import (
	"context"
	"log/slog"

	"github.com/goray/goray/internal/core"
	"github.com/goray/goray/internal/embed"
	"github.com/goray/goray/internal/workerenv"
)

// Option configures Init. Options are opaque: make them with the WithX
// functions of this package that return Option.
type Option interface{ apply(*core.Options) }

// initOption is an Option that sets fields of core.Options.
type initOption func(*core.Options)

func (f initOption) apply(o *core.Options) { f(o) }

// WithAddress connects to the raylet (usually `raylet --head`) at addr, given
// as host:port. Default: GORAY_ADDRESS; with neither, an embedded cluster is
// started in this process.
func WithAddress(addr string) Option { return initOption(func(o *core.Options) { o.Address = addr }) }

// WithToken sets the cluster token. Default: GORAY_TOKEN, then the file named
// by GORAY_TOKEN_FILE, then the token file `raylet --head` wrote for the
// address on this machine.
func WithToken(token string) Option { return initOption(func(o *core.Options) { o.Token = token }) }

// WithNamespace sets the namespace named actors are created and looked up
// in. Default "default".
func WithNamespace(ns string) Option {
	return initOption(func(o *core.Options) { o.Namespace = ns })
}

// WithResources sets the resources the embedded node offers, e.g.
// {"CPU": 4, "GPU": 1}; it is ignored when connecting to a cluster. Default:
// this machine's CPUs and memory. What an actor or task asks for is set
// with WithDemand.
func WithResources(r map[string]float64) Option {
	return initOption(func(o *core.Options) { o.Resources = r })
}

// WithLogger sets the logger of this process's goray code and of its
// embedded cluster. Default: a text logger on stderr at the level
// GORAY_LOG_LEVEL names (debug, info, warn, error), warn when unset.
func WithLogger(l *slog.Logger) Option { return initOption(func(o *core.Options) { o.Logger = l }) }

// Init connects this program to a goray cluster, or starts an embedded one.
// In a worker process started by a raylet it serves and never returns.
//
// Run with GORAY_DESCRIBE=1 it prints what the program registered (task
// functions, actor types and methods) as JSON and exits; `goray deploy` uses
// it. Run by `goray deploy` (GORAY_DEPLOY_JOB set) it attaches to the
// deployment's job: the actors it creates outlive it (see docs/clients.md).
func Init(ctx context.Context, opts ...Option) error {
	core.DescribeIfAsked()
	ServeIfWorker()
	o := core.Options{StartEmbedded: startEmbedded}
	for _, opt := range opts {
		opt.apply(&o)
	}
	_, err := core.InitDriver(ctx, o)
	return err
}

// startEmbedded starts the embedded default: a head with its own node in
// this process, on loopback.
func startEmbedded(ctx context.Context, res map[string]float64, log *slog.Logger) (core.Embedded, error) {
	cfg := embed.Config{Head: true, LazyCoordination: true}
	cfg.Resources, cfg.Logger = res, log
	return embed.Start(ctx, cfg)
}

// Shutdown finishes the job: its workers stop and its objects are freed. It
// also stops an embedded cluster.
func Shutdown() {
	if c, err := core.Current(); err == nil {
		c.Shutdown()
	}
}

// IsWorker reports whether this process runs as a worker started by a raylet.
func IsWorker() bool { return workerenv.IsWorker() }

// ServeIfWorker serves as a worker, and never returns, when this process was
// started by a raylet; otherwise it returns at once. Init calls it; call it
// yourself where a program must not run its driver code in a worker, such as
// a TestMain of tests that use goray.
func ServeIfWorker() {
	if workerenv.IsWorker() {
		core.RunWorker()
	}
}
