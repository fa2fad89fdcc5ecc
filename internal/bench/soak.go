package bench

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	goruntime "runtime"
	"strconv"
	"strings"
	"syscall"
	"text/tabwriter"

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
	StoreBytes int64 // bytes allocated in the nodes' store directories
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
	dirs, err := storeDirs(ctx, c, r.cluster.token)
	if err != nil {
		return nil, err
	}
	tw := tabwriter.NewWriter(cfg.Out, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "series\titeration\tdriver RSS MiB\traylets+workers RSS MiB\tstore MiB\tdriver's objects\t")
	var rows []SoakRow
	report := func(series string, i int) {
		goruntime.GC()
		rss := processRSS()
		row := SoakRow{Series: series, Iteration: i, DriverRSS: rss[0], StoreBytes: allocatedBytes(dirs), Owned: c.ObjectCounts().Owned}
		for _, x := range rss[1:] {
			row.OthersRSS += x
		}
		rows = append(rows, row)
		fmt.Fprintf(tw, "%s\t%d\t%.1f\t%.1f\t%.1f\t%d\t\n", series, i, mib(row.DriverRSS), mib(row.OthersRSS), mib(row.StoreBytes), row.Owned)
		tw.Flush()
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

// storeDirs are the store directories of the cluster's nodes on this
// machine.
func storeDirs(ctx context.Context, c *core.Core, token string) ([]string, error) {
	resp, err := c.Head().ListNodes(ctx, &pb.ListNodesRequest{})
	if err != nil {
		return nil, err
	}
	var dirs []string
	for _, n := range resp.GetNodes() {
		cc, err := rpc.Dial(n.GetAddress(), token)
		if err != nil {
			return nil, err
		}
		info, err := rpc.NewNodeClient(cc).GetNodeInfo(ctx, &pb.GetNodeInfoRequest{})
		cc.Close()
		if err != nil {
			return nil, fmt.Errorf("node %s: %w", n.GetAddress(), err)
		}
		dirs = append(dirs, info.GetStoreDir())
	}
	return dirs, nil
}

// allocatedBytes is the space the files under dirs take (their allocated
// blocks: an arena's untouched pages take none).
func allocatedBytes(dirs []string) int64 {
	var n int64
	for _, d := range dirs {
		_ = filepath.WalkDir(d, func(path string, e os.DirEntry, err error) error {
			if err != nil || e.IsDir() {
				return nil
			}
			if fi, err := e.Info(); err == nil {
				if st, ok := fi.Sys().(*syscall.Stat_t); ok {
					n += st.Blocks * 512
				}
			}
			return nil
		})
	}
	return n
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
