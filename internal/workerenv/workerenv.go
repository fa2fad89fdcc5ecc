// Package workerenv is the contract between a raylet and the worker processes
// it starts from a job's binary: the environment variables the raylet sets and
// the worker reads.
package workerenv

import (
	"fmt"
	"os"
)

// Environment variable names.
const (
	// EnvWorker is "1" in a worker process; runtime.Init then serves instead
	// of returning to the driver's flow.
	EnvWorker = "GORAY_WORKER"
	// EnvRayletAddress is the address of the raylet that started the worker.
	EnvRayletAddress = "GORAY_RAYLET_ADDRESS"
	// EnvHeadAddress is the head's address.
	EnvHeadAddress = "GORAY_HEAD_ADDRESS"
	// EnvToken is the cluster token ("" when auth is off).
	EnvToken = "GORAY_WORKER_TOKEN"
	// EnvJobID is the job's ID in hex.
	EnvJobID = "GORAY_JOB_ID"
	// EnvWorkerID is the worker's ID in hex, chosen by the raylet.
	EnvWorkerID = "GORAY_WORKER_ID"
	// EnvNodeID is the node's ID in hex.
	EnvNodeID = "GORAY_NODE_ID"
	// EnvStoreDir is the node's object store directory.
	EnvStoreDir = "GORAY_STORE_DIR"
	// EnvListenHost is the host the worker's server listens on.
	EnvListenHost = "GORAY_LISTEN_HOST"
	// EnvNamespace is the job's namespace, where the worker's named-actor
	// lookups (actor.Get) and named spawns go unless they name another.
	EnvNamespace = "GORAY_JOB_NAMESPACE"
)

// Env is a worker's view of its environment.
type Env struct {
	RayletAddress, HeadAddress, Token string
	JobID, WorkerID, NodeID           string
	StoreDir, ListenHost              string
	// Namespace is the job's namespace ("" for an old raylet that does not
	// set it).
	Namespace string
}

// IsWorker reports whether this process was started by a raylet as a worker.
func IsWorker() bool { return os.Getenv(EnvWorker) == "1" }

// Read reads the worker environment and checks that it is complete.
func Read() (Env, error) {
	e := Env{
		RayletAddress: os.Getenv(EnvRayletAddress),
		HeadAddress:   os.Getenv(EnvHeadAddress),
		Token:         os.Getenv(EnvToken),
		JobID:         os.Getenv(EnvJobID),
		WorkerID:      os.Getenv(EnvWorkerID),
		NodeID:        os.Getenv(EnvNodeID),
		StoreDir:      os.Getenv(EnvStoreDir),
		ListenHost:    os.Getenv(EnvListenHost),
		Namespace:     os.Getenv(EnvNamespace),
	}
	if e.ListenHost == "" {
		e.ListenHost = "127.0.0.1"
	}
	for name, v := range map[string]string{EnvRayletAddress: e.RayletAddress, EnvJobID: e.JobID, EnvWorkerID: e.WorkerID, EnvStoreDir: e.StoreDir} {
		if v == "" {
			return e, fmt.Errorf("worker environment incomplete: %s is not set (worker processes are started by a raylet, not by hand)", name)
		}
	}
	return e, nil
}

// Vars is the environment a raylet adds for a worker, as KEY=VALUE strings.
func (e Env) Vars() []string {
	return []string{
		EnvWorker + "=1",
		EnvRayletAddress + "=" + e.RayletAddress,
		EnvHeadAddress + "=" + e.HeadAddress,
		EnvToken + "=" + e.Token,
		EnvJobID + "=" + e.JobID,
		EnvWorkerID + "=" + e.WorkerID,
		EnvNodeID + "=" + e.NodeID,
		EnvStoreDir + "=" + e.StoreDir,
		EnvListenHost + "=" + e.ListenHost,
		EnvNamespace + "=" + e.Namespace,
	}
}
