// Package testcluster is goray's test framework for whole clusters, as
// etcd's tests/framework is: one Cluster interface, an in-process runner
// (InProcess: a head and raylets inside the test process, built on
// internal/embed) and a multi-process runner (Processes: the built `raylet`
// binary on loopback, every process stopped even when a test fails), and
// test bodies written once against the interface and run under both runners
// (NodeDeath).
//
// A test body drives the cluster through the public SDK, so the test process
// must be a driver connected to the cluster (runtime.Init with the cluster's
// Address and Token) and must serve as a worker when a raylet starts it
// (runtime.ServeIfWorker first in TestMain): the raylets start workers from
// the test binary itself.
//
// Waiting is done with internal/testwait; a sleep is never a
// synchronisation.
package testcluster

import (
	"context"
	"fmt"
	"testing"

	"github.com/goray/goray/internal/testwait"
	"github.com/goray/goray/runtime"
)

// Cluster is a running goray cluster: a head with its own node, and nodes
// that join it.
type Cluster interface {
	// Address is the head's address (its node shares it): where drivers
	// connect.
	Address() string
	// Token is the cluster token ("" without auth).
	Token() string
	// AddNode starts a node with resources that joins the head, and waits
	// until the head lists it alive. It is stopped when t ends.
	AddNode(t testing.TB, resources map[string]float64) Node
	// Close stops every node and the head. It is idempotent.
	Close()
}

// Node is one node (raylet) of a Cluster.
type Node interface {
	// ID is the node's ID, as runtime.CurrentNodeID and runtime.Nodes give
	// it.
	ID() string
	// Kill ends the node at once, as a crash would: its workers die with
	// it and the head learns of it only by missed heartbeats.
	Kill(t testing.TB)
}

// WaitAlive waits until the head lists every node of ids as alive; the
// driver must be connected (runtime.Init).
func WaitAlive(ctx context.Context, ids ...string) error {
	return WaitNodes(ctx, fmt.Sprintf("nodes %v alive", ids), func(byID map[string]runtime.Node) bool {
		for _, id := range ids {
			if !byID[id].Alive {
				return false
			}
		}
		return true
	})
}

// WaitNodes waits until cond holds for the head's node table (by node ID);
// the driver must be connected.
func WaitNodes(ctx context.Context, what string, cond func(map[string]runtime.Node) bool) error {
	var lastErr error
	err := testwait.Until(ctx, what, func() bool {
		nodes, err := runtime.Nodes(ctx)
		lastErr = err
		return err == nil && cond(ByID(nodes))
	})
	if err != nil && lastErr != nil {
		return fmt.Errorf("%w (last error: %v)", err, lastErr)
	}
	return err
}

// ByID indexes nodes by ID.
func ByID(nodes []runtime.Node) map[string]runtime.Node {
	m := make(map[string]runtime.Node, len(nodes))
	for _, n := range nodes {
		m[n.ID] = n
	}
	return m
}
