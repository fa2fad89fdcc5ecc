package e2e

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"syscall"
	"testing"
	"time"

	"github.com/goray/goray/internal/errs"
	"github.com/goray/goray/internal/files"
	"github.com/goray/goray/internal/rpc"
	"github.com/goray/goray/internal/testwait"
	pb "github.com/goray/goray/proto/goray/v1"
)

// filesNodeTimeout is the head's node timeout in the file tests: long
// enough that a failed-over read finishes well before the killed node is
// declared dead, short enough to wait for the repair.
const filesNodeTimeout = "6s"

// fileSource is a deterministic stream of n pseudo-random bytes, generated
// as it is read (never whole in memory).
type fileSource struct {
	rng *rand.ChaCha8
	n   int64
}

func newFileSource(seed byte, n int64) *fileSource {
	var s [32]byte
	s[0] = seed
	return &fileSource{rng: rand.NewChaCha8(s), n: n}
}

func (s *fileSource) Read(p []byte) (int, error) {
	if s.n == 0 {
		return 0, io.EOF
	}
	if int64(len(p)) > s.n {
		p = p[:s.n]
	}
	s.rng.Read(p)
	s.n -= int64(len(p))
	return len(p), nil
}

// sourceHash is the SHA-256 of newFileSource(seed, n).
func sourceHash(seed byte, n int64) files.Hash {
	h := sha256.New()
	io.Copy(h, newFileSource(seed, n))
	return files.Hash(h.Sum(nil))
}

func fileClient(t *testing.T, ctx context.Context, n *node, tokenFile string) *files.Client {
	t.Helper()
	tok, err := rpc.ReadTokenFile(tokenFile)
	if err != nil {
		t.Fatal(err)
	}
	c, err := files.DialVia(ctx, n.Addr, tok)
	if err != nil {
		t.Fatalf("dial the file store via %s: %v", n.Name(), err)
	}
	t.Cleanup(c.Close)
	return c
}

func replicaIDs(info *pb.FileInfo) []string {
	var out []string
	for _, r := range info.GetReplicas() {
		out = append(out, fmt.Sprintf("%x", r.GetNodeId()))
	}
	slices.Sort(out)
	return out
}

func nodeAlive(t *testing.T, ctx context.Context, headAddr, tokenFile, id string) bool {
	t.Helper()
	tok, _ := rpc.ReadTokenFile(tokenFile)
	cc, err := rpc.Dial(headAddr, tok)
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	resp, err := rpc.NewHeadClient(cc).ListNodes(ctx, &pb.ListNodesRequest{})
	if err != nil {
		t.Fatalf("ListNodes: %v", err)
	}
	for _, n := range resp.GetNodes() {
		if fmt.Sprintf("%x", n.GetNodeId()) == id {
			return n.GetAlive()
		}
	}
	return false
}

// readAll reads the file through r and returns its hash.
func readAll(t *testing.T, r io.Reader) (files.Hash, int64) {
	t.Helper()
	h := sha256.New()
	n, err := io.Copy(h, r)
	if err != nil {
		t.Fatalf("read the file: got %v after %d bytes, want the whole file", err, n)
	}
	return files.Hash(h.Sum(nil)), n
}

// TestFiles is the file store's acceptance test on real raylet processes:
// a head of its own and four raylets; a 200 MiB file with 3 replicas; the
// raylet serving a read is killed with SIGKILL in the middle of it and the
// read completes from another replica, byte for byte, before the node is
// declared dead; once it is, the file is back to 3 replicas on live nodes;
// a raylet killed and restarted with the same data directory still serves
// its replica; bytes flipped in a replica on disk are detected on read (the
// read still completes, from another replica) and repaired.
func TestFiles(t *testing.T) {
	const size = 200 << 20
	const seed = 1
	c := newCluster(t)
	head := c.StartHeadOnly("127.0.0.1:0", "--node-timeout", filesNodeTimeout)
	var nodes []*node
	for _, name := range []string{"a", "b", "c", "d"} {
		nodes = append(nodes, c.Join(name, `{"CPU":1}`))
	}
	byAddr := func(addr string) *node {
		for _, n := range nodes {
			if n.Addr == addr {
				return n
			}
		}
		t.Fatalf("no node serves at %s", addr)
		return nil
	}
	ctx, cancel := context.WithTimeout(t.Context(), 4*time.Minute)
	defer cancel()
	want := sourceHash(seed, size)
	fc := fileClient(t, ctx, nodes[0], c.TokenFile)

	info, err := fc.Put(ctx, newFileSource(seed, size), 3, "data/big.bin")
	if err != nil {
		t.Fatalf("put 200 MiB with 3 replicas: %v", err)
	}
	if got := files.Hash(info.GetSha256()); got != want {
		t.Fatalf("put: got hash %s, want %s", got, want)
	}
	if got := len(info.GetReplicas()); got != 3 || info.GetReplicasWanted() != 3 || info.GetSize() != size {
		t.Fatalf("put: got %d replicas (wanted %d) of %d bytes, want 3 of %d", got, info.GetReplicasWanted(), info.GetSize(), size)
	}

	// Kill the raylet serving a read in the middle of it.
	r, err := fc.Open(ctx, "data/big.bin")
	if err != nil {
		t.Fatal(err)
	}
	hw := sha256.New()
	if _, err := io.CopyN(hw, r, 64<<20); err != nil {
		t.Fatalf("read the first 64 MiB: %v", err)
	}
	victim := byAddr(r.Serving())
	killedAt := time.Now() // just before the SIGKILL
	victim.Kill(t)
	rest, err := io.Copy(hw, r)
	doneAt := time.Now()
	if err != nil {
		t.Fatalf("read after killing the serving raylet %s: got %v after %d more bytes, want the rest of the file", victim.Name(), err, rest)
	}
	r.Close()
	if got := files.Hash(hw.Sum(nil)); got != want || rest != size-64<<20 {
		t.Fatalf("failed-over read: got %d bytes hashing to %s, want %d hashing to %s", 64<<20+rest, got, size, want)
	}
	if nodeAlive(t, ctx, head.Addr, c.TokenFile, victim.NodeID) == false {
		t.Fatalf("the killed node %s was declared dead before the failed-over read completed; the read must not wait for it", victim.Name())
	}
	fails := r.Failovers()
	if len(fails) == 0 || fails[0].From != victim.Addr || fails[0].Resumed.IsZero() {
		t.Fatalf("failovers: got %+v, want one from %s that resumed", fails, victim.Addr)
	}
	t.Logf("failover: the read resumed from another replica %v after the SIGKILL (at byte %d; error seen %v after the kill), completed %v after it, before the node was declared dead",
		fails[0].Resumed.Sub(killedAt), fails[0].Offset, fails[0].At.Sub(killedAt), doneAt.Sub(killedAt))

	// Once the node is declared dead, the file is back to 3 replicas on
	// live nodes.
	testwait.Eventually(t, 30*time.Second, "the killed node declared dead", func() bool {
		return !nodeAlive(t, ctx, head.Addr, c.TokenFile, victim.NodeID)
	})
	var live []*node
	for _, n := range nodes {
		if n != victim {
			live = append(live, n)
		}
	}
	testwait.Eventually(t, 60*time.Second, "3 replicas on the live nodes", func() bool {
		info, err := fc.Stat(ctx, "data/big.bin")
		if err != nil {
			return false
		}
		var want []string
		for _, n := range live {
			want = append(want, n.NodeID)
		}
		slices.Sort(want)
		return slices.Equal(replicaIDs(info), want)
	})
	t.Logf("re-replicated to 3 live nodes %v", []string{live[0].Name(), live[1].Name(), live[2].Name()})

	// A raylet restarted with the same data directory still serves its
	// replica.
	old := live[1]
	old.Kill(t) // a crash: SIGKILL, then the same data directory again
	restarted := c.Join(old.Name(), `{"CPU":1}`)
	testwait.Eventually(t, 30*time.Second, "the restarted raylet's replica adopted", func() bool {
		info, err := fc.Stat(ctx, "data/big.bin")
		return err == nil && slices.Contains(replicaIDs(info), restarted.NodeID)
	})
	rc := fileClient(t, ctx, restarted, c.TokenFile)
	r2, err := rc.Open(ctx, want.String())
	if err != nil {
		t.Fatal(err)
	}
	if got, n := readAll(t, r2); got != want {
		t.Fatalf("read through the restarted raylet: got %d bytes hashing to %s, want %s", n, got, want)
	}
	if len(r2.Failovers()) != 0 {
		t.Fatalf("read through the restarted raylet: got failovers %+v, want it served by its own replica", r2.Failovers())
	}
	r2.Close()

	// Bytes flipped in a replica on disk are detected on read and
	// repaired.
	bad := live[2]
	path := filepath.Join(bad.DataDir, "files", want.String())
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		t.Fatalf("open the replica on %s: %v", bad.Name(), err)
	}
	if _, err := f.WriteAt([]byte("corrupt!"), 100<<20+12345); err != nil {
		t.Fatal(err)
	}
	f.Close()
	bc := fileClient(t, ctx, bad, c.TokenFile)
	r3, err := bc.Open(ctx, want.String())
	if err != nil {
		t.Fatal(err)
	}
	if got, n := readAll(t, r3); got != want {
		t.Fatalf("read of a file with a corrupt replica: got %d bytes hashing to %s, want %s", n, got, want)
	}
	fails = r3.Failovers()
	if len(fails) == 0 || fails[0].From != bad.Addr || fails[0].Offset != 100<<20 {
		t.Fatalf("failovers of the corrupt read: got %+v, want one from %s at byte %d", fails, bad.Addr, 100<<20)
	}
	t.Logf("corrupt replica detected: %v", fails[0].Err)
	r3.Close()
	testwait.Eventually(t, 60*time.Second, "the corrupt replica repaired on disk", func() bool {
		f, err := os.Open(path)
		if err != nil {
			return false
		}
		defer f.Close()
		h := sha256.New()
		io.Copy(h, f)
		return files.Hash(h.Sum(nil)) == want
	})

	// A raylet stopped (SIGSTOP) in the middle of serving a read sends
	// nothing and breaks nothing: the reader fails over once it has waited
	// its stall timeout for a block.
	bc.SetStallTimeout(time.Second)
	r4, err := bc.Open(ctx, want.String())
	if err != nil {
		t.Fatal(err)
	}
	h4 := sha256.New()
	if _, err := io.CopyN(h4, r4, 32<<20); err != nil {
		t.Fatal(err)
	}
	stopped := byAddr(r4.Serving())
	stopped.Signal(t, syscall.SIGSTOP)
	t.Cleanup(func() { syscall.Kill(stopped.Pid(), syscall.SIGCONT) })
	stoppedAt := time.Now()
	if _, err := io.Copy(h4, r4); err != nil {
		t.Fatalf("read after stopping the serving raylet %s: %v", stopped.Name(), err)
	}
	if got := files.Hash(h4.Sum(nil)); got != want {
		t.Fatalf("read around a stopped raylet: got hash %s, want %s", got, want)
	}
	fails = r4.Failovers()
	if len(fails) == 0 || fails[len(fails)-1].From != stopped.Addr {
		t.Fatalf("failovers around the stopped raylet: got %+v, want one from %s", fails, stopped.Addr)
	}
	t.Logf("stopped raylet: the read went on from another replica %v after the SIGSTOP (stall timeout 1s)", fails[len(fails)-1].Resumed.Sub(stoppedAt))
	r4.Close()
	stopped.Signal(t, syscall.SIGCONT)
}

// TestFilesBadInput: an unknown hash is ErrNotFound; more replicas than
// nodes stores on every node and says how many; a disk that fills during a
// put fails it with a clear error, removes the partial file and leaves the
// earlier files intact (the data dir is a small tmpfs); a malformed hash
// or name is ErrInvalidArgument.
func TestFilesBadInput(t *testing.T) {
	c := newCluster(t)
	c.StartHeadOnly("127.0.0.1:0")
	a := c.Join("a", `{"CPU":1}`)
	// A 48 MiB tmpfs as the data dir of raylet "small" (the test runs as
	// root; without it, the disk-full case cannot be made real here).
	smallDir := filepath.Join(c.Dir, "small")
	if err := os.MkdirAll(smallDir, 0o700); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size=48m", "tmpfs", smallDir).CombinedOutput(); err != nil {
		t.Fatalf("mount a 48 MiB tmpfs for the disk-full case (needs root): %v: %s", err, out)
	}
	t.Cleanup(func() {
		if out, err := exec.Command("umount", smallDir).CombinedOutput(); err != nil {
			t.Errorf("umount %s: %v: %s", smallDir, err, out)
		}
	})
	small := c.Join("small", `{"CPU":1}`)
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	defer cancel()
	fc := fileClient(t, ctx, a, c.TokenFile)

	t.Run("unknown hash", func(t *testing.T) {
		h := sourceHash(99, 10)
		_, err := fc.Open(ctx, h.String())
		if !errors.Is(err, errs.ErrNotFound) {
			t.Fatalf("open an unknown hash: got %v, want ErrNotFound", err)
		}
		if _, err := fc.Stat(ctx, "no/such/name"); !errors.Is(err, errs.ErrNotFound) {
			t.Fatalf("stat an unknown name: got %v, want ErrNotFound", err)
		}
	})
	t.Run("more replicas than nodes", func(t *testing.T) {
		info, err := fc.Put(ctx, newFileSource(2, 3<<20+17), 5, "five")
		if err != nil {
			t.Fatal(err)
		}
		if got := len(info.GetReplicas()); got != 2 || info.GetReplicasWanted() != 5 {
			t.Fatalf("put with 5 replicas on 2 nodes: got %d replicas (wanted %d), want 2 (wanted 5)", got, info.GetReplicasWanted())
		}
		if got, want := replicaIDs(info), []string{min(a.NodeID, small.NodeID), max(a.NodeID, small.NodeID)}; !slices.Equal(got, want) {
			t.Fatalf("replica nodes: got %v, want %v", got, want)
		}
	})
	t.Run("malformed", func(t *testing.T) {
		for _, ref := range []string{"sha256:xyz", "sha256:" + string(bytes.Repeat([]byte("g"), 64)), "a//b", "../up", ""} {
			if _, err := fc.Stat(ctx, ref); !errors.Is(err, errs.ErrInvalidArgument) {
				t.Errorf("stat %q: got %v, want ErrInvalidArgument", ref, err)
			}
		}
		if _, err := fc.Put(ctx, newFileSource(3, 10), 1, "bad\x00name"); !errors.Is(err, errs.ErrInvalidArgument) {
			t.Errorf("put with a malformed name: got %v, want ErrInvalidArgument", err)
		}
		// The server checks too, for clients that do not.
		tok, _ := rpc.ReadTokenFile(c.TokenFile)
		cc, err := rpc.Dial(c.Head.Addr, tok)
		if err != nil {
			t.Fatal(err)
		}
		defer cc.Close()
		_, err = pb.NewFileIndexServiceClient(cc).LookupFile(ctx, &pb.LookupFileRequest{Sha256: []byte{1, 2, 3}})
		if !errors.Is(errs.FromStatus(err), errs.ErrInvalidArgument) {
			t.Errorf("LookupFile with a 3-byte hash: got %v, want ErrInvalidArgument", err)
		}
	})
	t.Run("disk fills", func(t *testing.T) {
		sc := fileClient(t, ctx, small, c.TokenFile)
		first, err := sc.Put(ctx, newFileSource(4, 8<<20), 1, "small/first")
		if err != nil {
			t.Fatalf("put 8 MiB on the small disk: %v", err)
		}
		_, err = sc.Put(ctx, newFileSource(5, 100<<20), 1, "small/too-big")
		if !errors.Is(err, errs.ErrObjectStoreFull) {
			t.Fatalf("put 100 MiB on a 48 MiB disk: got %v, want ErrObjectStoreFull", err)
		}
		t.Logf("disk full: %v", err)
		tmp, _ := os.ReadDir(filepath.Join(smallDir, "files", ".tmp"))
		if len(tmp) != 0 {
			t.Fatalf("partial files left after the failed put: %v", tmp)
		}
		if _, err := sc.Stat(ctx, "small/too-big"); !errors.Is(err, errs.ErrNotFound) {
			t.Fatalf("stat the failed put's name: got %v, want ErrNotFound", err)
		}
		r, err := sc.Open(ctx, "small/first")
		if err != nil {
			t.Fatal(err)
		}
		defer r.Close()
		if got, _ := readAll(t, r); got != files.Hash(first.GetSha256()) {
			t.Fatalf("the earlier file after the disk filled: got hash %s, want %x", got, first.GetSha256())
		}
		// The raylet keeps serving puts.
		if _, err := sc.Put(ctx, newFileSource(6, 1<<20), 1, ""); err != nil {
			t.Fatalf("put after the disk filled: %v", err)
		}
	})
	t.Run("the writer goes away mid-put", func(t *testing.T) {
		// The input fails after 20 MiB: the put fails, and no node keeps a
		// partial file (the forwarded copy included).
		_, err := fc.Put(ctx, io.MultiReader(newFileSource(8, 20<<20), failingReader{}), 2, "never/whole")
		if err == nil {
			t.Fatal("put whose input fails: got no error")
		}
		for _, dir := range []string{a.DataDir, smallDir} {
			testwait.Eventually(t, 10*time.Second, "no partial file in "+filepath.Base(dir), func() bool {
				tmp, _ := os.ReadDir(filepath.Join(dir, "files", ".tmp"))
				return len(tmp) == 0
			})
		}
		if _, err := fc.Stat(ctx, "never/whole"); !errors.Is(err, errs.ErrNotFound) {
			t.Fatalf("stat the failed put's name: got %v, want ErrNotFound", err)
		}
	})
	t.Run("a replica's disk fills", func(t *testing.T) {
		// Put through a with 2 replicas: the copy forwarded to the small
		// disk fails part way; the put keeps its own copy, says it has 1,
		// and the small disk's partial file is removed.
		info, err := fc.Put(ctx, newFileSource(7, 60<<20), 2, "big/on-a")
		if err != nil {
			t.Fatalf("put 60 MiB with a replica on a full disk: %v", err)
		}
		if got := replicaIDs(info); len(got) != 1 || got[0] != a.NodeID || info.GetReplicasWanted() != 2 {
			t.Fatalf("replicas: got %v (wanted %d), want only a's (wanted 2)", got, info.GetReplicasWanted())
		}
		testwait.Eventually(t, 10*time.Second, "the small disk's partial copy removed", func() bool {
			tmp, _ := os.ReadDir(filepath.Join(smallDir, "files", ".tmp"))
			return len(tmp) == 0
		})
		if _, err := os.Stat(filepath.Join(smallDir, "files", files.Hash(info.GetSha256()).String())); err == nil {
			t.Fatal("the small disk holds a replica it could not have written whole")
		}
	})
}

// failingReader fails every read, as a writer that went away.
type failingReader struct{}

func (failingReader) Read([]byte) (int, error) { return 0, errors.New("the writer went away") }

// TestFilesHeadRestart: the file index lives in the head's store, so a head
// killed with SIGKILL and restarted on its data dir still knows every file
// and name, and the files read back from the raylets that kept running.
func TestFilesHeadRestart(t *testing.T) {
	c := newCluster(t)
	head := c.StartHeadOnly("127.0.0.1:0")
	a := c.Join("a", `{"CPU":1}`)
	c.Join("b", `{"CPU":1}`)
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	defer cancel()
	fc := fileClient(t, ctx, a, c.TokenFile)
	info, err := fc.Put(ctx, newFileSource(9, 9<<20+5), 2, "kept/over/restart")
	if err != nil {
		t.Fatal(err)
	}
	head.Signal(t, syscall.SIGKILL)
	head.Wait(t, stopTimeout)
	c.StartHeadOnly(head.Addr)
	var got *pb.FileInfo
	testwait.Eventually(t, 30*time.Second, "the file listed with both replicas by the restarted head", func() bool {
		got, err = fc.Stat(ctx, "kept/over/restart")
		return err == nil && len(got.GetReplicas()) == 2
	})
	if files.Hash(got.GetSha256()) != files.Hash(info.GetSha256()) {
		t.Fatalf("after the head restart: got hash %x, want %x", got.GetSha256(), info.GetSha256())
	}
	r, err := fc.Open(ctx, "kept/over/restart")
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	if h, _ := readAll(t, r); h != sourceHash(9, 9<<20+5) {
		t.Fatalf("read after the head restart: got hash %s, want %s", h, sourceHash(9, 9<<20+5))
	}
}
