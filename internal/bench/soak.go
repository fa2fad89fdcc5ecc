package bench

import (
	"context"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"time"

	"google.golang.org/grpc"

	"github.com/goray/goray/internal/core"
	"github.com/goray/goray/internal/rpc"
	"github.com/goray/goray/objectstore"
	pb "github.com/goray/goray/proto/goray/v1"
)

// SoakConfig configures `goray soak`: a long-running driver that drops every
// ref it makes, measured as it goes (docs/objects.md, "A long-running
// driver").
type SoakConfig struct {
	Puts, Tasks, BigPuts int // iterations of each series
	Every                int // report every so many iterations (big puts: every Every/250)
	Exe                  string
	Out                  io.Writer
}

// SoakRow is one measurement of a soak series.
type SoakRow struct {
	Series     string
	Iteration  int
	DriverRSS  int64 // bytes
	OthersRSS  int64 // bytes: the raylets and their workers
	StoreBytes int64 // bytes in use in the nodes' object stores
	Owned      int   // objects in the driver's table
}

// Soak runs the three series of the long-running driver on an embedded
// cluster of two raylet processes and reports each row as it is measured.
func Soak(ctx context.Context, cfg SoakConfig) ([]SoakRow, error) {
	if cfg.Every <= 0 {
		cfg.Every = 50000
	}
	if cfg.Exe == "" {
		exe, err := os.Executable()
		if err != nil {
			return nil, err
		}
		cfg.Exe = exe
	}
	r := &runner{cfg: Config{Exe: cfg.Exe, Out: io.Discard, Progress: os.Stderr}}
	defer r.close()
	end, err := r.job(ctx)
	if err != nil {
		return nil, err
	}
	defer end()
	c, err := core.Current()
	if err != nil {
		return nil, err
	}
	stores, closeStores, err := nodeStores(ctx, c, r.cluster.token)
	if err != nil {
		return nil, err
	}
	defer closeStores()
	fmt.Fprintf(cfg.Out, "%-28s %10s %12s %14s %12s %9s %9s\n", "series", "iteration", "driver RSS", "others' RSS", "store used", "objects", "seconds")
	start := time.Now()
	var rows []SoakRow
	report := func(series string, i int) {
		rss := processRSS()
		used := stores(ctx)
		row := SoakRow{Series: series, Iteration: i, DriverRSS: rss[0], StoreBytes: used, Owned: c.ObjectCounts().Owned}
		for _, x := range rss[1:] {
			row.OthersRSS += x
		}
		rows = append(rows, row)
		fmt.Fprintf(cfg.Out, "%-28s %10d %8.1f MiB %10.1f MiB %8.1f MiB %9d %9.1f\n", series, i, mib(row.DriverRSS), mib(row.OthersRSS), mib(used), row.Owned, time.Since(start).Seconds())
	}
	series := []struct {
		name  string
		n     int
		every int
		step  func(i int) error
	}{
		{"put+get (small)", cfg.Puts, cfg.Every, func(i int) error {
			ref, err := objectstore.Put(ctx, i)
			if err != nil {
				return err
			}
			_, err = ref.Get(ctx)
			return err
		}},
		{"task, ref dropped after Get", cfg.Tasks, cfg.Every, func(i int) error {
			_, err := smallValue.Remote(ctx).Get(ctx)
			return err
		}},
		{"1 MiB put, dropped", cfg.BigPuts, max(1, cfg.Every/250), func(i int) error {
			_, err := objectstore.Put(ctx, largeBuffer(1<<20))
			return err
		}},
	}
	for _, s := range series {
		if s.n <= 0 {
			continue
		}
		report(s.name, 0)
		for i := 1; i <= s.n; i++ {
			if err := s.step(i); err != nil {
				return rows, fmt.Errorf("%s, iteration %d: %w", s.name, i, err)
			}
			if i%s.every == 0 || i == s.n {
				report(s.name, i)
			}
			if ctx.Err() != nil {
				return rows, ctx.Err()
			}
		}
	}
	return rows, nil
}

func mib(b int64) float64 { return float64(b) / (1 << 20) }

// nodeStores returns a func that reports the bytes in use in the cluster's
// object stores, summed over its nodes.
func nodeStores(ctx context.Context, c *core.Core, token string) (func(context.Context) int64, func(), error) {
	resp, err := c.Head().ListNodes(ctx, &pb.ListNodesRequest{})
	if err != nil {
		return nil, nil, err
	}
	var clients []*rpc.NodeClient
	var conns []*grpc.ClientConn
	closeAll := func() {
		for _, cc := range conns {
			cc.Close()
		}
	}
	for _, n := range resp.GetNodes() {
		cc, err := rpc.Dial(n.GetAddress(), token)
		if err != nil {
			closeAll()
			return nil, nil, err
		}
		conns = append(conns, cc)
		clients = append(clients, rpc.NewNodeClient(cc))
	}
	return func(ctx context.Context) (used int64) {
		for _, nc := range clients {
			if info, err := nc.GetNodeInfo(ctx, &pb.GetNodeInfoRequest{}); err == nil {
				used += int64(info.GetObjectStore().GetUsedBytes())
			}
		}
		return used
	}, closeAll, nil
}

// processRSS is the resident set of this process, then of each of its
// descendants.
func processRSS() []int64 {
	pids := scaleProcs()
	out := make([]int64, len(pids))
	for i, pid := range pids {
		out[i] = rssOf(pid)
	}
	return out
}

func rssOf(pid int) int64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			f := strings.Fields(v)
			if len(f) > 0 {
				kb, _ := strconv.ParseInt(f[0], 10, 64)
				return kb << 10
			}
		}
	}
	return 0
}
