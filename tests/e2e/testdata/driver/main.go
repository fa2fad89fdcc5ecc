// Command driver is the goray program the e2e tests run against a cluster of
// real raylet processes. Its mode comes from E2E_MODE:
//
//	cluster (default)  actors and tasks on the nodes named by E2E_NODE_B and
//	                   E2E_NODE_C (custom resources node_b and node_c), a ref
//	                   passed across nodes and a 64 MiB object pulled back;
//	                   prints "E2E OK ..." and exits 0.
//	block              spawns actors and starts tasks on the head node and on
//	                   node_b, prints "READY", then waits for a line (or EOF)
//	                   on stdin and returns from main after runtime.Shutdown.
//	headrestart        counters on node_b and node_c, driven through stdin
//	                   around a head restart (headrestart.go).
//
// Any failure, including runtime.Init's, is printed as "driver: <error>" to
// stderr with exit status 1. Raylets start this same binary as its workers.
package main

import (
	"bufio"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"math/rand/v2"
	"os"
	"time"

	"github.com/goray/goray/actor"
	"github.com/goray/goray/objectstore"
	"github.com/goray/goray/runtime"
	"github.com/goray/goray/task"
)

const (
	blobSeed = 20240917
	blobSize = 64 << 20
	// produced is larger than the inline limit, so it lives in node B's store
	// and node C has to pull it.
	producedSeed = 7
	producedSize = 1 << 20
)

// Prober is an actor that reports where it runs and makes large values.
type Prober struct{}

// Node returns the ID of the node hosting the actor.
func (*Prober) Node(context.Context) (string, error) { return os.Getenv("GORAY_NODE_ID"), nil }

// Blob returns size deterministic pseudo-random bytes made from seed.
func (*Prober) Blob(_ context.Context, seed uint64, size int) ([]byte, error) {
	return gen(seed, size), nil
}

// Produced is what the producer task returns.
type Produced struct {
	Node string
	Data []byte
}

// Consumed is what the consumer task saw of its argument.
type Consumed struct {
	Node         string // where the consumer ran
	ProducerNode string
	Len          int
	SHA256       string
}

var (
	proberType  = actor.Register("e2e.prober", func() *Prober { return &Prober{} })
	proberNode  = actor.Method0(proberType, "node", (*Prober).Node)
	proberBlob  = actor.Method2(proberType, "blob", (*Prober).Blob)
	produceTask = task.Register0("e2e.produce", func(context.Context) (Produced, error) {
		return Produced{Node: os.Getenv("GORAY_NODE_ID"), Data: gen(producedSeed, producedSize)}, nil
	})
	consumeTask = task.Register1("e2e.consume", func(_ context.Context, p Produced) (Consumed, error) {
		return Consumed{Node: os.Getenv("GORAY_NODE_ID"), ProducerNode: p.Node, Len: len(p.Data), SHA256: sum(p.Data)}, nil
	})
	whereTask = task.Register0("e2e.where", func(context.Context) (string, error) {
		return os.Getenv("GORAY_NODE_ID"), nil
	})
	// blockTask runs until its worker is stopped (bounded, so a leak ends).
	blockTask = task.Register0("e2e.block", func(ctx context.Context) (int, error) {
		select {
		case <-ctx.Done():
		case <-time.After(10 * time.Minute):
		}
		return 0, nil
	})
)

// gen makes size deterministic pseudo-random bytes from seed.
func gen(seed uint64, size int) []byte {
	r := rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
	b := make([]byte, size)
	for i := 0; i < size; i += 8 {
		v := r.Uint64()
		for j := 0; j < 8 && i+j < size; j++ {
			b[i+j] = byte(v >> (8 * j))
		}
	}
	return b
}

func sum(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

// Keeper is a detached actor's state.
type Keeper struct{ n int }

func (k *Keeper) Add(_ context.Context, d int) (int, error) { k.n += d; return k.n, nil }

var (
	keeperType = actor.Register("e2e.keeper", func() *Keeper { return &Keeper{} })
	keeperAdd  = actor.Method1(keeperType, "add", (*Keeper).Add)
)

// detachedCreate makes a detached named actor and a plain one, adds 5 to the
// detached one and exits: the detached one must outlive this job.
func detachedCreate(ctx context.Context) error {
	h, err := actor.Spawn(ctx, keeperType, actor.WithName("keeper"), actor.WithDetached())
	if err != nil {
		return err
	}
	if _, err := actor.Spawn(ctx, keeperType, actor.WithName("plain")); err != nil {
		return err
	}
	n, err := keeperAdd.Remote(ctx, h, objectstore.Val(5)).Get(ctx)
	if err != nil {
		return err
	}
	fmt.Println("DETACHED CREATED", n)
	return nil
}

// detachedUse finds the detached actor by name, checks its state survived
// its creator, that the plain actor died with its job, and kills it.
func detachedUse(ctx context.Context) error {
	h, err := actor.Get(ctx, keeperType, "keeper")
	if err != nil {
		return err
	}
	n, err := keeperAdd.Remote(ctx, h, objectstore.Val(1)).Get(ctx)
	if err != nil {
		return err
	}
	if n != 6 {
		return fmt.Errorf("detached actor state: got %d, want 6 (5 from its creator + 1)", n)
	}
	if _, err := actor.Get(ctx, keeperType, "plain"); err == nil {
		return fmt.Errorf("the non-detached actor outlived its job")
	}
	if err := actor.Kill(ctx, h); err != nil {
		return err
	}
	fmt.Println("DETACHED OK", n)
	return nil
}

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "driver:", err)
		os.Exit(1)
	}
}

func run() error {
	timeout := 90 * time.Second
	if d, err := time.ParseDuration(os.Getenv("E2E_TIMEOUT")); err == nil {
		timeout = d
	}
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	// Init first: in a worker process it serves and never returns.
	if err := runtime.Init(ctx); err != nil {
		return err
	}
	defer runtime.Shutdown()
	switch mode := os.Getenv("E2E_MODE"); mode {
	case "", "cluster":
		return cluster(ctx)
	case "block":
		return block(ctx)
	case "workerkill":
		return workerKill(ctx)
	case "chaos":
		return chaos(ctx)
	case "detached-create":
		return detachedCreate(ctx)
	case "detached-use":
		return detachedUse(ctx)
	case "headrestart":
		return headRestart(ctx)
	default:
		return fmt.Errorf("unknown E2E_MODE %q", mode)
	}
}

func need(name string) (string, error) {
	v := os.Getenv(name)
	if v == "" {
		return "", fmt.Errorf("%s is not set", name)
	}
	return v, nil
}

func cluster(ctx context.Context) error {
	nodeB, err := need("E2E_NODE_B")
	if err != nil {
		return err
	}
	nodeC, err := need("E2E_NODE_C")
	if err != nil {
		return err
	}
	onB := map[string]float64{"node_b": 0.1}
	onC := map[string]float64{"node_c": 0.1}

	// Actors placed by custom resources run on the nodes that have them.
	actB, err := actor.Spawn(ctx, proberType, actor.WithResources(onB))
	if err != nil {
		return fmt.Errorf("spawn actor on node_b: %w", err)
	}
	actC, err := actor.Spawn(ctx, proberType, actor.WithResources(onC))
	if err != nil {
		return fmt.Errorf("spawn actor on node_c: %w", err)
	}
	gotB, err := proberNode.Remote(ctx, actB).Get(ctx)
	if err != nil {
		return fmt.Errorf("actor on node_b: node: %w", err)
	}
	gotC, err := proberNode.Remote(ctx, actC).Get(ctx)
	if err != nil {
		return fmt.Errorf("actor on node_c: node: %w", err)
	}
	if gotB != nodeB {
		return fmt.Errorf("actor with node_b runs on node %q, want %q", gotB, nodeB)
	}
	if gotC != nodeC {
		return fmt.Errorf("actor with node_c runs on node %q, want %q", gotC, nodeC)
	}
	if gotB == gotC {
		return fmt.Errorf("both actors run on node %q, want two distinct nodes", gotB)
	}

	// A ref made by a task on node B is the argument of a task on node C.
	produced := produceTask.Remote(ctx, task.WithResources(onB))
	consumed, err := consumeTask.Remote(ctx, produced, task.WithResources(onC)).Get(ctx)
	if err != nil {
		return fmt.Errorf("consume(produce()): %w", err)
	}
	want := gen(producedSeed, producedSize)
	if consumed.ProducerNode != nodeB {
		return fmt.Errorf("producer task ran on node %q, want %q", consumed.ProducerNode, nodeB)
	}
	if consumed.Node != nodeC {
		return fmt.Errorf("consumer task ran on node %q, want %q", consumed.Node, nodeC)
	}
	if consumed.Len != len(want) || consumed.SHA256 != sum(want) {
		return fmt.Errorf("consumer saw %d bytes with sha256 %s, want %d bytes with sha256 %s", consumed.Len, consumed.SHA256, len(want), sum(want))
	}

	// A 64 MiB value made by the actor on node C comes back byte for byte.
	blob, err := proberBlob.Remote(ctx, actC, objectstore.Val(uint64(blobSeed)), objectstore.Val(blobSize)).Get(ctx)
	if err != nil {
		return fmt.Errorf("blob from node_c: %w", err)
	}
	wantBlob := gen(blobSeed, blobSize)
	gotSum, wantSum := sum(blob), sum(wantBlob)
	if len(blob) != len(wantBlob) || gotSum != wantSum {
		return fmt.Errorf("blob from node_c: got %d bytes with sha256 %s, want %d bytes with sha256 %s", len(blob), gotSum, len(wantBlob), wantSum)
	}
	fmt.Printf("E2E OK nodes=%s,%s blob_bytes=%d blob_sha256=%s\n", gotB[:8], gotC[:8], len(blob), gotSum)
	return nil
}

func block(ctx context.Context) error {
	onB := map[string]float64{"node_b": 0.1}
	local, err := actor.Spawn(ctx, proberType)
	if err != nil {
		return fmt.Errorf("spawn actor: %w", err)
	}
	remote, err := actor.Spawn(ctx, proberType, actor.WithResources(onB))
	if err != nil {
		return fmt.Errorf("spawn actor on node_b: %w", err)
	}
	nodes := map[string]bool{}
	for _, h := range []actor.Handle[Prober]{local, remote} {
		n, err := proberNode.Remote(ctx, h).Get(ctx)
		if err != nil {
			return fmt.Errorf("actor node: %w", err)
		}
		nodes[n] = true
	}
	for _, opts := range [][]task.Option{nil, {task.WithResources(onB)}} {
		n, err := whereTask.Remote(ctx, opts...).Get(ctx)
		if err != nil {
			return fmt.Errorf("task: %w", err)
		}
		nodes[n] = true
	}
	if len(nodes) != 2 {
		return fmt.Errorf("work ran on %d nodes, want 2", len(nodes))
	}
	// Tasks that are still running when the driver goes away.
	blockTask.Remote(ctx)
	blockTask.Remote(ctx, task.WithResources(onB))
	fmt.Println("READY")
	bufio.NewReader(os.Stdin).ReadString('\n') // a line or EOF ends the driver
	return nil
}
