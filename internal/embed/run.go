package embed

import (
	"context"
	"fmt"
	"io"
	"os"

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
		if s.node != nil {
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
	if cfg.NoNode {
		fmt.Fprintf(stderr, "goray head (no node) running at %s\n  join a node:       %s\n  connect a driver:  set GORAY_ADDRESS to a raylet's address\n",
			s.Address(), join)
	} else {
		fmt.Fprintf(stderr, "goray head running at %s\n  join another node:  %s\n  connect a driver:   %s go run ./yourprogram\n",
			s.Address(), join, driver)
	}
}
