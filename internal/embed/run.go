package embed

import (
	"context"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/goray/goray/internal/raylet"
	"github.com/goray/goray/internal/rpc"
)

// Run is the body of cmd/raylet: it starts the server cfg describes, prints
// its ready line to stdout (and for a head, how to join it to stderr), blocks
// until ctx is done and stops it. A node the head declared dead (its
// raylet's Retired) is stopped and started again as a new node (new node ID,
// same address), printing a new ready line. The ready lines are
//
//	goray raylet ready: address=<addr> node=<node id hex> head=<true|false> token_file=<path or empty>
//	goray head ready: address=<addr> token_file=<path or empty>   (NoNode)
func Run(ctx context.Context, cfg Config) error {
	if err := cfg.Validate(); err != nil {
		return err
	}
	for {
		s, err := Start(ctx, cfg)
		if err != nil {
			return err
		}
		printReady(os.Stdout, os.Stderr, cfg, s)
		var retired <-chan struct{}
		if s.node != nil && !cfg.Head {
			// (A head's own node is replaced inside the server: headnode.go.)
			retired = s.node.Retired()
		}
		select {
		case <-ctx.Done():
			s.Close()
			return nil
		case <-retired:
		}
		s.Close()
		// The same address (the port is free again), a fresh node.
		cfg.Listen = s.Address()
		if cfg.Logger != nil {
			cfg.Logger.Warn("starting a new incarnation of this node", "address", cfg.Listen, "old_node", s.node.NodeID())
		}
	}
}

// printCoordination says on stderr how to reach the head's etcd.
func printCoordination(stderr io.Writer, s *Server) {
	if s.coord == nil {
		return
	}
	in := s.coord.Info()
	if len(in.Endpoints) == 0 {
		return
	}
	what := "embedded etcd"
	if !in.Embedded {
		what = "external etcd"
	}
	fmt.Fprintf(stderr, "goray coordination (%s) at %s\n", what, strings.Join(in.Endpoints, ","))
	switch {
	case in.User == "":
		fmt.Fprintf(stderr, "  etcd authentication is off: etcdctl --endpoints %s get KEY\n", strings.Join(in.Endpoints, ","))
	case len(s.credFiles) == 2:
		fmt.Fprintf(stderr, "  users: %s (read-write), %s (read-only); passwords in %s and %s (mode 0600), or `goray kv creds`\n  etcdctl:  (set -a; . %s; etcdctl get KEY)\n",
			in.User, in.ROUser, s.credFiles[0], s.credFiles[1], s.credFiles[0])
	default:
		fmt.Fprintf(stderr, "  users: %s (read-write), %s (read-only); passwords: `goray kv creds`\n", in.User, in.ROUser)
	}
}

// printReady prints s's ready line to stdout and, for a head, how to join
// it and connect a driver to stderr.
func printReady(stdout, stderr io.Writer, cfg Config, s *Server) {
	if s.node == nil {
		fmt.Fprintf(stdout, "goray head ready: address=%s token_file=%s\n", s.Address(), s.TokenFile())
	} else {
		fmt.Fprintf(stdout, "goray raylet ready: address=%s node=%s head=%t token_file=%s\n",
			s.Address(), s.node.NodeID(), cfg.Head, s.TokenFile())
	}
	if !cfg.Head {
		return
	}
	join := "raylet --address " + s.Address()
	if s.TokenFile() != "" {
		join += " --token-file " + s.TokenFile()
	} else {
		join += " --no-auth"
	}
	driver := "GORAY_ADDRESS=" + s.Address()
	if tf := s.TokenFile(); tf != "" && tf != rpc.DefaultTokenPath(s.Address()) {
		driver += " " + raylet.EnvTokenFile + "=" + tf
	}
	printCoordination(stderr, s)
	if cfg.NoNode {
		fmt.Fprintf(stderr, "goray head (no node) running at %s\n  join a node:       %s\n  connect a driver:  set GORAY_ADDRESS to a raylet's address\n",
			s.Address(), join)
	} else {
		fmt.Fprintf(stderr, "goray head running at %s\n  join another node:  %s\n  connect a driver:   %s go run ./yourprogram\n",
			s.Address(), join, driver)
	}
}
