package bench

import (
	"context"
	"fmt"
	"os"
	"path/filepath"

	"github.com/goray/goray/internal/rpc"
	"github.com/goray/goray/runtime"
)

// remoteResource is the custom resource the second raylet of the embedded
// cluster has, so that cross_node_get_gigabytes can place its producer
// there. Against an existing cluster (--address) a node that should serve
// as the remote one must have it.
const remoteResource = "goray_bench_remote"

const rayletReady = "goray raylet ready: "

// cluster is the embedded cluster: a head raylet and a second raylet, each a
// child process running this binary.
type cluster struct {
	addr, token string
	dir         string
	raylets     []*child
}

func startCluster(ctx context.Context, exe string) (_ *cluster, err error) {
	dir, err := os.MkdirTemp("", "goray-bench-")
	if err != nil {
		return nil, err
	}
	c := &cluster{dir: dir}
	defer func() {
		if err != nil {
			c.stop()
		}
	}()
	tokenFile := filepath.Join(dir, "token")
	head, line, err := startChild(ctx, exe, nil, rayletReady, childRaylet, "-head", "-token-file", tokenFile)
	if err != nil {
		return nil, fmt.Errorf("start head raylet: %w", err)
	}
	c.raylets = append(c.raylets, head)
	if c.addr, err = field(line, "address"); err != nil {
		return nil, err
	}
	if c.token, err = rpc.ReadTokenFile(tokenFile); err != nil {
		return nil, err
	}
	node, _, err := startChild(ctx, exe, nil, rayletReady, childRaylet, "-address", c.addr, "-token-file", tokenFile,
		"-resources", fmt.Sprintf(`{%q: 1000}`, remoteResource))
	if err != nil {
		return nil, fmt.Errorf("start second raylet: %w", err)
	}
	c.raylets = append(c.raylets, node)
	return c, nil
}

func (c *cluster) stop() {
	for i := len(c.raylets) - 1; i >= 0; i-- {
		c.raylets[i].stop()
	}
	c.raylets = nil
	os.RemoveAll(c.dir)
}

// runner holds what a run shares between metrics: the cluster, the echo
// server and the current goray job.
type runner struct {
	cfg     Config
	timing  timing
	sizes   sizes
	cluster *cluster
	echo    *echoClient
	inJob   bool
	coord   *coordBench // the coordination workloads' clients (coord.go)
}

// job starts a fresh goray job (driver session) on the cluster, ending the
// current one: each metric runs in its own job, so objects left by one do
// not weigh on the next. The returned func ends it.
func (r *runner) job(ctx context.Context) (func(), error) {
	r.endJob()
	addr, token := r.cfg.Address, r.cfg.Token
	if addr == "" {
		if r.cluster == nil {
			r.progress("    starting the embedded cluster (two raylet processes)")
			c, err := startCluster(ctx, r.cfg.Exe)
			if err != nil {
				return nil, err
			}
			r.cluster = c
		}
		addr, token = r.cluster.addr, r.cluster.token
	}
	opts := []runtime.Option{runtime.WithAddress(addr), runtime.WithNamespace(benchNamespace)}
	if token != "" {
		opts = append(opts, runtime.WithToken(token))
	}
	if err := runtime.Init(ctx, opts...); err != nil {
		return nil, err
	}
	r.inJob = true
	return r.endJob, nil
}

func (r *runner) endJob() {
	if r.inJob {
		runtime.Shutdown()
		r.inJob = false
	}
}

func (r *runner) close() {
	r.endJob()
	if r.coord != nil {
		r.coord.close()
		r.coord = nil
	}
	if r.echo != nil {
		r.echo.close()
		r.echo = nil
	}
	if r.cluster != nil {
		r.cluster.stop()
		r.cluster = nil
	}
}
