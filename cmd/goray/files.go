package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/schollz/progressbar/v3"
	"golang.org/x/term"

	ifiles "github.com/goray/goray/internal/files"
	"github.com/goray/goray/internal/rpc"
	pb "github.com/goray/goray/proto/goray/v1"
)

const filesUsage = `usage: goray files COMMAND [flags] ARGS

  put [--replicas N] [--name NAME] FILE|-   store a file (- reads stdin); prints its hash
  get [-o OUT] HASH|NAME                    write a file to OUT (default stdout), verified
  ls [PREFIX]                               list the files (with a prefix: the names under it)
  stat HASH|NAME                            show a file's size, names and replicas
  rm HASH|NAME                              remove a name, or a file by hash with its names

Every command takes --address HOST:PORT of a raylet (or of a head that runs
a node; default $GORAY_ADDRESS): puts go through it and reads prefer its
replicas. A hash is 64 hex digits, optionally after "sha256:"; anything else
is a name. Transfers of 8 MiB or more show a progress bar on a terminal
(--no-progress hides it).
`

// progressMin is the size from which transfers show a progress bar.
const progressMin = 8 << 20

func filesCommand(ctx context.Context, args []string, out io.Writer) error {
	if len(args) == 0 || args[0] == "help" || args[0] == "-h" || args[0] == "--help" {
		fmt.Fprint(out, filesUsage)
		if len(args) == 0 {
			return errors.New("files: no command given")
		}
		return nil
	}
	cmd := args[0]
	fs := flag.NewFlagSet("files "+cmd, flag.ContinueOnError)
	var address, token, name, output string
	var replicas int
	var noProgress bool
	fs.StringVar(&address, "address", "", "HOST:PORT of a raylet, or of a head that runs a node (default $GORAY_ADDRESS)")
	resolve := tokenFlags(fs, &token, "file holding the cluster token (default: $GORAY_TOKEN, $GORAY_TOKEN_FILE, the local token file)")
	fs.BoolVar(&noProgress, "no-progress", false, "never show a progress bar")
	switch cmd {
	case "put":
		fs.IntVar(&replicas, "replicas", 1, "replicas on distinct nodes (more than there are nodes: stored on all)")
		fs.StringVar(&name, "name", "", "a name for the file (a /-separated path)")
	case "get":
		fs.StringVar(&output, "o", "", "write to this file (written under a temporary name and renamed once verified) instead of stdout")
	case "ls", "stat", "rm":
	default:
		fmt.Fprint(os.Stderr, filesUsage)
		return fmt.Errorf("files: unknown command %q", cmd)
	}
	if err := fs.Parse(args[1:]); err != nil {
		return err
	}
	if err := resolve(); err != nil {
		return err
	}
	if address == "" {
		address = os.Getenv("GORAY_ADDRESS")
	}
	if address == "" {
		return errors.New("files: no cluster address: pass --address HOST:PORT of a raylet or set GORAY_ADDRESS")
	}
	want := 1
	if cmd == "ls" {
		want = fs.NArg() // 0 or 1
		if want > 1 {
			return fmt.Errorf("files ls: got arguments %q, want at most a prefix", fs.Args())
		}
	} else if fs.NArg() != 1 {
		return fmt.Errorf("files %s: got arguments %q, want one", cmd, fs.Args())
	}
	dctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	c, err := ifiles.DialVia(dctx, address, rpc.ResolveToken(token, address))
	cancel()
	if err != nil {
		return err
	}
	defer c.Close()
	showBar := !noProgress && term.IsTerminal(int(os.Stderr.Fd()))
	switch cmd {
	case "put":
		return filesPut(ctx, c, fs.Arg(0), replicas, name, showBar, out)
	case "get":
		return filesGet(ctx, c, fs.Arg(0), output, showBar, out)
	case "ls":
		infos, err := c.List(ctx, fs.Arg(0))
		if err != nil {
			return err
		}
		tw := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "HASH\tSIZE\tREPLICAS\tNAMES")
		for _, in := range infos {
			fmt.Fprintf(tw, "%x\t%d\t%d/%d\t%s\n", in.GetSha256(), in.GetSize(), len(in.GetReplicas()), in.GetReplicasWanted(), strings.Join(in.GetNames(), ","))
		}
		return tw.Flush()
	case "stat":
		in, err := c.Stat(ctx, fs.Arg(0))
		if err != nil {
			return err
		}
		printInfo(out, in)
		return nil
	default: // rm
		content, err := c.Remove(ctx, fs.Arg(0))
		if err != nil {
			return err
		}
		if content {
			fmt.Fprintln(out, "removed", fs.Arg(0))
		} else {
			fmt.Fprintln(out, "removed the name", fs.Arg(0), "(another name still maps to the file)")
		}
		return nil
	}
}

func printInfo(out io.Writer, in *pb.FileInfo) {
	fmt.Fprintf(out, "hash:     %x\nsize:     %d\nnames:    %s\nreplicas: %d of %d wanted\n", in.GetSha256(), in.GetSize(), strings.Join(in.GetNames(), ", "), len(in.GetReplicas()), in.GetReplicasWanted())
	for _, r := range in.GetReplicas() {
		fmt.Fprintf(out, "  node %x at %s\n", r.GetNodeId(), r.GetAddress())
	}
}

func bar(size int64, what string) *progressbar.ProgressBar {
	return progressbar.NewOptions64(size, progressbar.OptionSetWriter(os.Stderr), progressbar.OptionShowBytes(true),
		progressbar.OptionSetDescription(what), progressbar.OptionThrottle(100*time.Millisecond),
		progressbar.OptionShowCount(), progressbar.OptionOnCompletion(func() { fmt.Fprintln(os.Stderr) }))
}

func filesPut(ctx context.Context, c *ifiles.Client, path string, replicas int, name string, showBar bool, out io.Writer) error {
	var in io.Reader = os.Stdin
	size := int64(-1)
	if path != "-" {
		f, err := os.Open(path)
		if err != nil {
			return err
		}
		defer f.Close()
		if st, err := f.Stat(); err == nil && st.Mode().IsRegular() {
			size = st.Size()
		}
		in = f
	}
	if showBar && (size >= progressMin || size < 0) {
		b := bar(size, "put")
		in = io.TeeReader(in, b)
		defer b.Finish()
	}
	info, err := c.Put(ctx, in, replicas, name)
	if err != nil {
		return err
	}
	fmt.Fprintf(out, "%x\n", info.GetSha256())
	if n := len(info.GetReplicas()); n < int(info.GetReplicasWanted()) {
		fmt.Fprintf(os.Stderr, "goray: stored %d of %d replicas (only %d nodes could take one); the head adds the rest as nodes join\n", n, info.GetReplicasWanted(), n)
	}
	return nil
}

func filesGet(ctx context.Context, c *ifiles.Client, ref, output string, showBar bool, out io.Writer) error {
	r, err := c.Open(ctx, ref)
	if err != nil {
		return err
	}
	defer r.Close()
	var w io.Writer = out
	var tmp *os.File
	if output != "" {
		tmp, err = os.CreateTemp(filepath.Dir(output), "."+filepath.Base(output)+".part-")
		if err != nil {
			return err
		}
		defer func() {
			if tmp != nil {
				tmp.Close()
				os.Remove(tmp.Name())
			}
		}()
		w = tmp
	}
	if size := int64(r.Info().GetSize()); showBar && size >= progressMin {
		b := bar(size, "get")
		w = io.MultiWriter(w, b)
		defer b.Finish()
	}
	if _, err := r.WriteTo(w); err != nil {
		return err
	}
	if tmp != nil {
		if err := tmp.Close(); err != nil {
			return err
		}
		if err := os.Rename(tmp.Name(), output); err != nil {
			return err
		}
		tmp = nil
	}
	return nil
}
