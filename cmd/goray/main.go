// Command goray is the cluster's command-line tool.
//
//	goray status [--address HOST:PORT]   list the cluster's nodes and their resources (the head's or a raylet's address)
//	goray bench [flags]                  run the benchmark suite (see docs/benchmarks.md)
//	goray deploy BINARY --namespace NS   deploy a Go job binary for clients in other languages
//	goray files put|get|ls|stat|rm       the cluster's file store (goray files help)
//	goray kv get|put|del|watch|lock|elect|creds ...   the coordination service (etcd), etcdctl's feel
//	goray version                        print the version
//
// The address defaults to GORAY_ADDRESS; the token to GORAY_TOKEN, then the
// file GORAY_TOKEN_FILE names, then the token file `raylet --head` wrote for
// that address on this machine.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"sort"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/goray/goray/internal/bench"
	"github.com/goray/goray/internal/errs"
	"github.com/goray/goray/internal/rpc"
	pb "github.com/goray/goray/proto/goray/v1"
	"github.com/goray/goray/runtime"
)

// Version is the goray release.
const Version = "0.1.0-dev"

const usage = `usage: goray <command> [flags]

commands:
  status    the cluster's nodes and resources, actors, placement groups and
            the requests no node can fit
  bench     run the benchmark suite (Ray's microbenchmarks and the transport's limits)
  deploy    deploy a Go job binary under a namespace (see docs/clients.md)
  files     put, get, list, stat and remove files in the cluster's file store
            (goray files help; docs/storage.md)
  kv        the coordination service (etcd): get, put, del, watch, lock,
            elect, creds (see docs/coordination.md; goray kv help)
  soak      run a long-running driver that drops every ref it makes, and
            print its memory and the store's as it goes (docs/objects.md)
  version   print the version
`

func main() {
	// goray bench runs its workloads from this binary: in a worker process
	// started by a raylet, serve and never return.
	runtime.ServeIfWorker()
	if bench.IsChild(os.Args[1:]) { // the benchmark's echo server and raylets
		os.Exit(bench.ChildMain(os.Args[1:]))
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Stdout)
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "goray:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, args []string, out io.Writer) error {
	if len(args) == 0 {
		fmt.Fprint(os.Stderr, usage)
		return errors.New("no command given")
	}
	if err := refuseTokenArg(args[1:]); err != nil {
		return err
	}
	switch args[0] {
	case "version":
		fmt.Fprintln(out, "goray", Version)
		return nil
	case "status":
		var cfg StatusConfig
		fs := flag.NewFlagSet("status", flag.ContinueOnError)
		fs.StringVar(&cfg.Address, "address", "", "HOST:PORT of the head or of any raylet (default $GORAY_ADDRESS)")
		resolve := tokenFlags(fs, &cfg.Token, "file holding the cluster token (default: $GORAY_TOKEN, $GORAY_TOKEN_FILE, the local token file)")
		if err := fs.Parse(args[1:]); err != nil {
			return err
		}
		if err := resolve(); err != nil {
			return err
		}
		if err := cfg.Validate(); err != nil {
			return err
		}
		return Status(ctx, cfg, out)
	case "bench":
		var cfg bench.Config
		fs := flag.NewFlagSet("bench", flag.ContinueOnError)
		fs.StringVar(&cfg.Address, "address", "", "HOST:PORT of an existing cluster's head (default: start an embedded cluster of two raylet processes)")
		resolve := tokenFlags(fs, &cfg.Token, "file holding the cluster token, with --address (default: $GORAY_TOKEN, $GORAY_TOKEN_FILE, the local token file)")
		fs.BoolVar(&cfg.Quick, "quick", false, "one short trial per metric with small sizes (smoke runs)")
		fs.BoolVar(&cfg.JSON, "json", false, "print one JSON object per metric instead of the table")
		fs.StringVar(&cfg.Run, "run", "", "run only the metrics whose name matches this regular expression (their baselines too)")
		fs.StringVar(&cfg.CPUProfile, "cpuprofile", "", "write the driver's CPU profile of the run to this file")
		fs.BoolVar(&cfg.Scale, "scale", false, "also run the long scale workloads (many_actors, many_tasks_queued, many_pgs; -run selects them too)")
		if err := fs.Parse(args[1:]); err != nil {
			return err
		}
		if fs.NArg() > 0 {
			return fmt.Errorf("bench: unexpected arguments %q", fs.Args())
		}
		if err := resolve(); err != nil {
			return err
		}
		cfg.Out = out
		_, err := bench.Run(ctx, cfg)
		return err
	case "soak":
		var cfg bench.SoakConfig
		fs := flag.NewFlagSet("soak", flag.ContinueOnError)
		fs.IntVar(&cfg.Puts, "puts", 1_000_000, "small put+get iterations")
		fs.IntVar(&cfg.Tasks, "tasks", 300_000, "tasks whose refs are dropped after Get")
		fs.IntVar(&cfg.BigPuts, "big-puts", 2_000, "1 MiB puts, dropped")
		fs.IntVar(&cfg.Every, "every", 50_000, "measure every so many iterations (1 MiB puts: every/250)")
		if err := fs.Parse(args[1:]); err != nil {
			return err
		}
		cfg.Out = out
		_, err := bench.Soak(ctx, cfg)
		return err
	case "deploy":
		return deployCommand(ctx, args[1:], out)
	case "files":
		return filesCommand(ctx, args[1:], out)
	case "kv":
		return kvCommand(ctx, args[1:], out)
	case "help", "-h", "--help":
		fmt.Fprint(out, usage)
		return nil
	default:
		fmt.Fprint(os.Stderr, usage)
		return fmt.Errorf("unknown command %q", args[0])
	}
}

// StatusConfig configures `goray status`.
type StatusConfig struct {
	// Address is the head's or any raylet's HOST:PORT.
	Address string
	// Token is the cluster token.
	Token string
}

// Validate fills defaults and checks the config.
func (c *StatusConfig) Validate() error {
	if c.Address == "" {
		c.Address = os.Getenv("GORAY_ADDRESS")
	}
	if c.Address == "" {
		return errors.New("no cluster address: pass --address HOST:PORT (the head's or a raylet's) or set GORAY_ADDRESS to the address `raylet` printed")
	}
	c.Token = rpc.ResolveToken(c.Token, c.Address)
	return nil
}

// Status prints the cluster's nodes. cfg.Address may be the head's or any
// raylet's: a raylet is asked for its head, and the head answers.
func Status(ctx context.Context, cfg StatusConfig, out io.Writer) error {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	resp, err := clusterState(ctx, cfg)
	if err != nil {
		return err
	}
	tw := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "NODE\tADDRESS\tSTATE\tHEAD\tRESOURCES (available / total)")
	for _, n := range resp.GetNodes() {
		state := "alive"
		if !n.GetAlive() {
			state = "dead"
		}
		fmt.Fprintf(tw, "%x\t%s\t%s\t%v\t%s\n", n.GetNodeId(), n.GetAddress(), state, n.GetIsHead(), resources(n))
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	actors := map[string]int{}
	for _, a := range resp.GetActors() {
		actors[strings.ToLower(strings.TrimPrefix(a.GetState().String(), "ACTOR_STATE_"))]++
	}
	pgs := map[string]int{}
	for _, g := range resp.GetPlacementGroups() {
		pgs[strings.ToLower(strings.TrimPrefix(g.GetState().String(), "PLACEMENT_GROUP_STATE_"))]++
	}
	fmt.Fprintf(out, "\nactors: %s\nplacement groups: %s\n", counts(actors), counts(pgs))
	if inf := resp.GetInfeasible(); len(inf) > 0 {
		fmt.Fprintf(out, "\n%d request(s) no node can fit, waiting for one that can:\n", len(inf))
		for _, r := range inf {
			fmt.Fprintf(out, "  %s %s: %s\n", r.GetKind(), r.GetName(), r.GetReason())
		}
	}
	return nil
}

// clusterState asks the head at cfg.Address for the cluster's state; when
// the server there is a raylet without a head, it asks the raylet for its
// head's address and goes there.
func clusterState(ctx context.Context, cfg StatusConfig) (*pb.GetClusterStateResponse, error) {
	cc, err := rpc.DialHead(cfg.Address, cfg.Token)
	if err != nil {
		return nil, err
	}
	defer cc.Close()
	resp, err := rpc.NewHeadClient(cc).GetClusterState(ctx, &pb.GetClusterStateRequest{})
	if status.Code(err) != codes.Unimplemented {
		if err != nil {
			return nil, fmt.Errorf("no goray head answers at %s: %w", cfg.Address, errs.FromStatus(err))
		}
		return resp, nil
	}
	info, nerr := rpc.NewNodeClient(cc).GetNodeInfo(ctx, &pb.GetNodeInfoRequest{})
	if nerr != nil {
		return nil, fmt.Errorf("the server at %s is neither a goray head nor a raylet (%w); pass --address HOST:PORT of the head or of a raylet", cfg.Address, errs.FromStatus(nerr))
	}
	if info.GetHeadAddress() == "" {
		return nil, fmt.Errorf("the raylet at %s did not say where its head is; pass --address HOST:PORT of the head", cfg.Address)
	}
	head := info.GetHeadAddress()
	hc, err := rpc.DialHead(head, cfg.Token)
	if err != nil {
		return nil, err
	}
	defer hc.Close()
	resp, err = rpc.NewHeadClient(hc).GetClusterState(ctx, &pb.GetClusterStateRequest{})
	if err != nil {
		return nil, fmt.Errorf("%s is a raylet whose head is %s, and that head does not answer: %w", cfg.Address, head, errs.FromStatus(err))
	}
	return resp, nil
}

// counts formats a tally like "alive 3, dead 1", or "none".
func counts(m map[string]int) string {
	if len(m) == 0 {
		return "none"
	}
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	parts := make([]string, len(keys))
	for i, k := range keys {
		parts[i] = fmt.Sprintf("%s %d", k, m[k])
	}
	return strings.Join(parts, ", ")
}

func resources(n *pb.NodeInfo) string {
	total := n.GetTotal().GetAmounts()
	names := make([]string, 0, len(total))
	for k := range total {
		names = append(names, k)
	}
	sort.Strings(names)
	s := ""
	for _, k := range names {
		if s != "" {
			s += ", "
		}
		avail := n.GetAvailable().GetAmounts()[k]
		if k == "memory" {
			s += fmt.Sprintf("%s %.1f/%.1f GiB", k, avail/(1<<30), total[k]/(1<<30))
			continue
		}
		s += fmt.Sprintf("%s %g/%g", k, avail, total[k])
	}
	return s
}
