// Files: exercise 4 of the seed, goray's replicated file store. The program
// starts a cluster of its own (a head and three raylets, as processes of
// the raylet binary), saves files with 3 replicas, kills one raylet with
// SIGKILL, reads every file back (verified against its hash), adds a
// raylet, and watches the head copy the lost replicas to it.
//
//	go build -o /tmp/raylet ./cmd/raylet
//	go run ./examples/files -raylet /tmp/raylet
package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/goray/goray/files"
	"github.com/goray/goray/runtime"
)

// raylet is one process of the example's cluster.
type raylet struct {
	name    string
	cmd     *exec.Cmd
	addr    string
	nodeID  string
	done    chan struct{}
	stopped bool
}

// cluster is the example's own cluster, in a directory of its own.
type cluster struct {
	bin, dir, tokenFile string
	head                *raylet
	nodes               []*raylet
}

// start runs the raylet binary with args and waits for its ready line.
func (c *cluster) start(name string, args ...string) (*raylet, error) {
	cmd := exec.Command(c.bin, append(args, "--token-file", c.tokenFile, "--data-dir", filepath.Join(c.dir, name), "--log-level", "warn")...)
	// Its own process group (its workers die with it), and it dies with us.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	cmd.Stderr = os.Stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", c.bin, err)
	}
	r := &raylet{name: name, cmd: cmd, done: make(chan struct{})}
	ready := make(chan error, 1)
	go func() {
		sc := bufio.NewScanner(out)
		found := false
		for sc.Scan() {
			if found {
				continue
			}
			if f, ok := readyFields(sc.Text()); ok {
				r.addr, r.nodeID, found = f["address"], f["node"], true
				ready <- nil
			}
		}
		if !found {
			ready <- fmt.Errorf("raylet %s exited before it was ready", name)
		}
		cmd.Wait()
		close(r.done)
	}()
	select {
	case err := <-ready:
		if err != nil {
			return nil, err
		}
	case <-time.After(30 * time.Second):
		r.kill()
		return nil, fmt.Errorf("raylet %s: no ready line within 30s", name)
	}
	return r, nil
}

func readyFields(line string) (map[string]string, bool) {
	if !strings.HasPrefix(line, "goray raylet ready: ") && !strings.HasPrefix(line, "goray head ready: ") {
		return nil, false
	}
	f := map[string]string{}
	for _, kv := range strings.Fields(line) {
		if k, v, ok := strings.Cut(kv, "="); ok {
			f[k] = v
		}
	}
	return f, true
}

// join starts a raylet that joins the head.
func (c *cluster) join(name string) (*raylet, error) {
	r, err := c.start(name, "--address", c.head.addr, "--listen", "127.0.0.1:0", "--resources", `{"CPU":1}`)
	if err == nil {
		c.nodes = append(c.nodes, r)
	}
	return r, err
}

// kill ends the raylet's process group at once, as a crash would.
func (r *raylet) kill() {
	syscall.Kill(-r.cmd.Process.Pid, syscall.SIGKILL)
	<-r.done
	r.stopped = true
}

// stop ends it gracefully (SIGTERM), or kills it after 15 s.
func (r *raylet) stop() {
	if r.stopped {
		return
	}
	syscall.Kill(r.cmd.Process.Pid, syscall.SIGTERM)
	select {
	case <-r.done:
	case <-time.After(15 * time.Second):
	}
	r.kill()
}

func (c *cluster) close() {
	for i := len(c.nodes) - 1; i >= 0; i-- {
		c.nodes[i].stop()
	}
	if c.head != nil {
		c.head.stop()
	}
	os.RemoveAll(c.dir)
}

// names maps node IDs to the raylets' names.
func (c *cluster) names(in files.Info) string {
	var out []string
	for _, r := range in.Replicas {
		for _, n := range c.nodes {
			if n.nodeID == r.NodeID {
				out = append(out, n.name)
			}
		}
	}
	slices.Sort(out)
	return strings.Join(out, ", ")
}

// content is the deterministic content of file i: a small report.
func content(i int) []byte {
	var b bytes.Buffer
	for line := 0; b.Len() < (2<<20)+i*100_000; line++ {
		fmt.Fprintf(&b, "report %d, line %d: the quick brown fox jumps over the lazy dog\n", i, line)
	}
	return b.Bytes()
}

func main() {
	bin := flag.String("raylet", "", "path of the raylet binary (go build -o /tmp/raylet ./cmd/raylet); default: raylet on $PATH")
	n := flag.Int("files", 5, "how many files to save")
	flag.Parse()
	if err := run(*bin, *n); err != nil {
		fmt.Fprintln(os.Stderr, "files:", err)
		os.Exit(1)
	}
}

func run(bin string, nFiles int) error {
	if bin == "" {
		p, err := exec.LookPath("raylet")
		if err != nil {
			return errors.New("no raylet binary: build one (go build -o /tmp/raylet ./cmd/raylet) and pass -raylet /tmp/raylet")
		}
		bin = p
	}
	dir, err := os.MkdirTemp("", "goray-files-example-")
	if err != nil {
		return err
	}
	c := &cluster{bin: bin, dir: dir, tokenFile: filepath.Join(dir, "token")}
	defer c.close()
	// The head alone, declaring a node dead after 4 s without heartbeats.
	if c.head, err = c.start("head", "--head", "--no-node", "--listen", "127.0.0.1:0", "--node-timeout", "4s"); err != nil {
		return err
	}
	for _, name := range []string{"a", "b", "c"} {
		if _, err := c.join(name); err != nil {
			return err
		}
	}
	fmt.Println("cluster: a head and raylets a, b, c")

	token, err := os.ReadFile(c.tokenFile)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	// This driver's node is raylet a: its puts go through a.
	if err := runtime.Init(ctx, runtime.WithAddress(c.nodes[0].addr), runtime.WithToken(strings.TrimSpace(string(token)))); err != nil {
		return err
	}
	defer runtime.Shutdown()

	hashes := make([]files.Hash, nFiles)
	for i := range nFiles {
		name := fmt.Sprintf("exercise4/report-%d.txt", i)
		info, err := files.Put(ctx, bytes.NewReader(content(i)), files.WithReplicas(3), files.WithName(name))
		if err != nil {
			return err
		}
		hashes[i] = info.Hash
		fmt.Printf("saved %s: %d bytes, %d replicas on %s (sha256 %s…)\n", name, info.Size, len(info.Replicas), c.names(info), info.Hash.String()[:12])
	}

	c.nodes[2].kill()
	fmt.Println("killed raylet c (SIGKILL)")
	for i := range nFiles {
		r, err := files.Open(ctx, fmt.Sprintf("exercise4/report-%d.txt", i))
		if err != nil {
			return err
		}
		h := sha256.New()
		_, err = io.Copy(h, r) // verified block by block as it comes
		r.Close()
		if err != nil {
			return fmt.Errorf("read report-%d back: %w", i, err)
		}
		if files.Hash(h.Sum(nil)) != hashes[i] || !bytes.Equal(h.Sum(nil), sha256Of(content(i))) {
			return fmt.Errorf("report-%d: read back different bytes", i)
		}
	}
	fmt.Printf("read back all %d files from the live replicas: every byte verified\n", nFiles)

	if _, err := c.join("d"); err != nil {
		return err
	}
	fmt.Println("raylet d joined; waiting for the head to declare c dead and repair")
	for {
		all := true
		for i := range nFiles {
			info, err := files.Stat(ctx, hashes[i].String())
			if err != nil {
				return err
			}
			all = all && len(info.Replicas) == 3 && c.names(info) == "a, b, d"
		}
		if all {
			break
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("the files were not back to 3 replicas in time: %w", ctx.Err())
		case <-time.After(200 * time.Millisecond): // polling the head's index
		}
	}
	fmt.Printf("repaired: all %d files back to 3 replicas, on a, b, d\n", nFiles)
	ls, err := files.List(ctx, "exercise4/")
	if err != nil {
		return err
	}
	fmt.Printf("ok: %d files listed under exercise4/\n", len(ls))
	return nil
}

func sha256Of(b []byte) []byte { s := sha256.Sum256(b); return s[:] }
