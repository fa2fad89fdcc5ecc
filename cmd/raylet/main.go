// Command raylet runs a goray node: with --head it also runs the cluster's
// head (scheduler) on the same port; otherwise it joins the head at --address.
// With --head --no-node it runs the head alone (Ray's GCS as its own
// process), which can be restarted on the same --listen and --data-dir
// while the raylets and their workers keep running.
//
//	raylet --head --listen 127.0.0.1:6379
//	raylet --head --no-node --listen 127.0.0.1:6379 --data-dir /var/lib/goray --token-file ./cluster.token
//	raylet --address 127.0.0.1:6379 --token-file /tmp/goray-1000/tokens/127.0.0.1_6379.token
//
// On start it prints one line to stdout that scripts parse:
//
//	goray raylet ready: address=<addr> node=<node id hex> head=<true|false> token_file=<path or empty>
//
// or, with --no-node:
//
//	goray head ready: address=<addr> token_file=<path or empty>
//
// A raylet the head declared dead starts again as a new node on the same
// address and prints a new ready line.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/goray/goray/internal/embed"
	"github.com/goray/goray/internal/raylet"
)

func main() {
	if err := run(os.Args[1:]); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return
		}
		msg := err.Error()
		if !strings.HasPrefix(msg, "raylet") {
			msg = "raylet: " + msg
		}
		fmt.Fprintln(os.Stderr, msg)
		os.Exit(1)
	}
}

func run(args []string) error {
	fs := flag.NewFlagSet("raylet", flag.ContinueOnError)
	var (
		head       = fs.Bool("head", false, "also run the cluster head (scheduler) in this process, on the same port")
		noNode     = fs.Bool("no-node", false, "with --head: run the head alone, with no node and no workers (restartable on the same --listen and --data-dir)")
		nodeTO     = fs.Duration("node-timeout", 0, "with --head: how long a node may miss heartbeats before it is declared dead (default 10s)")
		driverTO   = fs.Duration("driver-reconnect-timeout", 0, "with --head: after a head restart, how long a running job's driver has to reconnect before the job is finished (default 30s)")
		address    = fs.String("address", "", "HOST:PORT of the head to join (required without --head); for a cluster of several heads, their addresses separated by commas")
		listen     = fs.String("listen", raylet.DefaultListen, "HOST:PORT to listen on, e.g. 127.0.0.1:6379 (port 0 picks a free one)")
		resources  = fs.String("resources", "", `node resources as JSON, merged over the detected CPU and memory, e.g. '{"CPU":2,"gpu":1}'`)
		tokenFile  = fs.String("token-file", "", "with --head: where to write the cluster token (default under the runtime dir); when joining: where to read it")
		noAuth     = fs.Bool("no-auth", false, "disable the cluster token (loopback only; insecure)")
		dataDir    = fs.String("data-dir", "", "directory for job binaries and head state; a head given one keeps its tables and token there across restarts (default: a fresh temporary directory, removed on exit)")
		logLevel   = fs.String("log-level", "info", "log level: debug, info, warn, error")
		storeMem   = fs.String("object-store-memory", "", "capacity of the node's shared-memory object store, in bytes or with a unit (256MiB, 2GB); past it objects are evicted and spilled to disk; 0: no arena, objects are unbounded files (default $GORAY_OBJECT_STORE_MEMORY, else min(25% of RAM, 2GiB))")
		spillAt    = fs.Float64("object-spilling-threshold", 0, "fraction of the object store's capacity past which objects are evicted and spilled in the background, in (0, 1] (default $GORAY_OBJECT_SPILLING_THRESHOLD, else 0.8)")
		spillDir   = fs.String("object-spilling-dir", "", "directory on disk for spilled objects; the raylet makes its own directory in it and removes it on exit (default $GORAY_OBJECT_SPILLING_DIR, else the data dir)")
		memThresh  = fs.Float64("memory-usage-threshold", 0, "fraction of the node's memory (the machine's, or the raylet's cgroup's) in use above which the memory monitor kills a worker, the newest retriable task's first; 1 turns it off (default 0.95, or $GORAY_MEMORY_USAGE_THRESHOLD)")
		memLimit   = fs.Int64("memory-limit", 0, "bytes of private memory (summed RSS) the node's worker processes may use before the memory monitor kills one (default none, or $GORAY_MEMORY_LIMIT)")
		etcdListen = fs.String("etcd-listen", "", "with --head: HOST:PORT of the embedded etcd member's client endpoint (default a free port on 127.0.0.1, kept in --data-dir across restarts); a non-loopback address needs the cluster token")
		etcdPeer   = fs.String("etcd-peer-listen", "", "with --head: HOST:PORT of the embedded etcd member's peer endpoint (default a free port on 127.0.0.1)")
		etcdEPs    = fs.String("etcd-endpoints", "", "with --head: comma-separated client URLs of an external etcd cluster to use instead of the embedded member, e.g. http://10.0.0.5:2379")
		etcdCreds  = fs.String("etcd-credentials-file", "", "with --etcd-endpoints: a file holding USER:PASSWORD for the external etcd cluster (handed to the cluster's processes)")
		etcdName   = fs.String("etcd-name", "", "with --head and --etcd-initial-cluster: this head's etcd member name")
		etcdInit   = fs.String("etcd-initial-cluster", "", "with --head: run this head as one of several (high availability): every head's etcd member as NAME=http://HOST:PORT (its peer URL), comma-separated, e.g. h1=http://10.0.0.1:2380,h2=http://10.0.0.2:2380,h3=http://10.0.0.3:2380; needs --etcd-name, --etcd-listen, --etcd-peer-listen, --data-dir and a shared --token-file")
		leaseTTL   = fs.Duration("head-lease-ttl", 0, "with --etcd-initial-cluster: the leader head's lease in whole seconds; a dead leader is replaced within about this long plus a second or two; raise it on a loaded machine or a slow network (default 1s)")
		memEvery   = fs.Duration("memory-monitor-interval", 0, "how often the memory monitor checks; negative turns it off (default 250ms, or $GORAY_MEMORY_MONITOR_INTERVAL)")
	)
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	var level slog.Level
	if err := level.UnmarshalText([]byte(*logLevel)); err != nil {
		return fmt.Errorf("--log-level: %w", err)
	}
	cfg := embed.Config{
		Head:                   *head,
		NoNode:                 *noNode,
		NodeTimeout:            *nodeTO,
		DriverReconnectTimeout: *driverTO,
	}
	cfg.EtcdListen, cfg.EtcdPeerListen = *etcdListen, *etcdPeer
	cfg.EtcdName, cfg.EtcdInitialCluster, cfg.HeadLeaseTTL = *etcdName, *etcdInit, *leaseTTL
	if *etcdEPs != "" {
		cfg.EtcdEndpoints = strings.Split(*etcdEPs, ",")
	}
	if *etcdCreds != "" {
		if *etcdEPs == "" {
			return errors.New("--etcd-credentials-file is for an external etcd cluster: give --etcd-endpoints too")
		}
		b, err := os.ReadFile(*etcdCreds)
		if err != nil {
			return fmt.Errorf("--etcd-credentials-file: %w", err)
		}
		user, pass, ok := strings.Cut(strings.TrimSpace(string(b)), ":")
		if !ok || user == "" {
			return fmt.Errorf("--etcd-credentials-file %s: want one line USER:PASSWORD", *etcdCreds)
		}
		cfg.EtcdUser, cfg.EtcdPassword = user, pass
	}
	cfg.Address, cfg.Listen, cfg.TokenFile, cfg.NoAuth, cfg.DataDir = *address, *listen, *tokenFile, *noAuth, *dataDir
	if *storeMem != "" {
		n, err := raylet.ParseSize(*storeMem)
		if err != nil || n < 0 {
			return fmt.Errorf("--object-store-memory: %v", orNegative(err, n))
		}
		cfg.ObjectStoreMemory = n
		if n == 0 {
			cfg.ObjectStoreMemory = -1 // no arena
		}
	}
	cfg.ObjectSpillingThreshold, cfg.ObjectSpillingDir = *spillAt, *spillDir
	cfg.MemoryUsageThreshold, cfg.MemoryLimit, cfg.MemoryMonitorInterval = *memThresh, *memLimit, *memEvery
	cfg.Logger = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))
	if *resources != "" {
		if err := json.Unmarshal([]byte(*resources), &cfg.Resources); err != nil {
			return fmt.Errorf(`--resources: want a JSON object of numbers like '{"CPU":2,"gpu":1}': %w`, err)
		}
	}
	if err := cfg.Validate(); err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	return embed.Run(ctx, cfg)
}

// orNegative is err, or the complaint about a negative size n.
func orNegative(err error, n int64) error {
	if err != nil {
		return err
	}
	return fmt.Errorf("%d bytes: want a size >= 0", n)
}
