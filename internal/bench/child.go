package bench

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/goray/goray/internal/embed"
)

// Hidden child modes of the goray binary (first argument).
const (
	childRaylet = "__bench-raylet"
	childEcho   = "__bench-echo"
)

// envEchoToken carries the echo server's token to it.
const envEchoToken = "GORAY_BENCH_TOKEN"

// startTimeout bounds how long a child process may take to say it is ready.
const startTimeout = 30 * time.Second

// IsChild reports whether args (os.Args[1:]) start one of the benchmark's
// hidden child modes, which ChildMain runs.
func IsChild(args []string) bool {
	return len(args) > 0 && (args[0] == childRaylet || args[0] == childEcho)
}

// ChildMain runs a hidden child mode until SIGTERM, SIGINT or the end of its
// stdin (its parent went away), and returns the process's exit code.
func ChildMain(args []string) int {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	go func() { // the parent holds our stdin: EOF means it is gone
		_, _ = io.Copy(io.Discard, os.Stdin)
		cancel()
	}()
	var err error
	switch args[0] {
	case childRaylet:
		err = runRayletChild(ctx, args[1:])
	case childEcho:
		err = serveEcho(ctx, os.Getenv(envEchoToken), os.Stdout)
	default:
		err = fmt.Errorf("unknown child mode %q", args[0])
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "goray bench child:", err)
		return 1
	}
	return 0
}

func runRayletChild(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet(childRaylet, flag.ContinueOnError)
	head := fs.Bool("head", false, "run the head too")
	address := fs.String("address", "", "head to join")
	tokenFile := fs.String("token-file", "", "token file")
	resources := fs.String("resources", "", "extra resources as JSON")
	if err := fs.Parse(args); err != nil {
		return err
	}
	level := slog.LevelWarn
	if err := level.UnmarshalText([]byte(os.Getenv("GORAY_LOG_LEVEL"))); err != nil {
		level = slog.LevelWarn
	}
	// The arena's pages are faulted in at start, as Ray's plasma store is:
	// no put in a trial pays for fresh pages.
	cfg := embed.Config{Head: *head}
	cfg.Address, cfg.TokenFile, cfg.ObjectStorePrefault = *address, *tokenFile, true
	cfg.Logger = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))
	if *resources != "" {
		if err := json.Unmarshal([]byte(*resources), &cfg.Resources); err != nil {
			return fmt.Errorf("-resources: %w", err)
		}
	}
	return embed.Run(ctx, cfg)
}

// child is a running child process of the benchmark.
type child struct {
	cmd   *exec.Cmd
	stdin io.WriteCloser
	done  chan struct{}
}

// startChild starts exe in a child mode and waits for the stdout line that
// starts with readyPrefix; it returns the rest of that line.
func startChild(ctx context.Context, exe string, env []string, readyPrefix string, args ...string) (*child, string, error) {
	cmd := exec.Command(exe, args...)
	cmd.Env = append(os.Environ(), env...)
	cmd.Stderr = os.Stderr
	// The child dies with us even when we are killed.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	stdin, err := cmd.StdinPipe()
	if err != nil {
		return nil, "", err
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return nil, "", err
	}
	if err := cmd.Start(); err != nil {
		return nil, "", fmt.Errorf("start %s %s: %w", exe, args[0], err)
	}
	c := &child{cmd: cmd, stdin: stdin, done: make(chan struct{})}
	lines := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(stdout)
		sent := false
		for sc.Scan() {
			if !sent && strings.HasPrefix(sc.Text(), readyPrefix) {
				lines <- strings.TrimPrefix(sc.Text(), readyPrefix)
				sent = true
			}
		}
		close(lines)
		_ = cmd.Wait()
		close(c.done)
	}()
	timer := time.NewTimer(startTimeout)
	defer timer.Stop()
	select {
	case line, ok := <-lines:
		if ok {
			return c, line, nil
		}
		<-c.done
		return nil, "", fmt.Errorf("%s %s exited before it was ready (%v)", exe, args[0], cmd.ProcessState)
	case <-timer.C:
		c.stop()
		return nil, "", fmt.Errorf("%s %s was not ready within %v", exe, args[0], startTimeout)
	case <-ctx.Done():
		c.stop()
		return nil, "", ctx.Err()
	}
}

// stop asks the child to stop (SIGTERM), kills it after a grace period, and
// waits for it.
func (c *child) stop() {
	_ = c.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-c.done:
		return
	case <-time.After(15 * time.Second):
	}
	_ = c.cmd.Process.Kill()
	<-c.done
	c.stdin.Close()
}

// field returns the value of key=value in a ready line.
func field(line, key string) (string, error) {
	for _, f := range strings.Fields(line) {
		if v, ok := strings.CutPrefix(f, key+"="); ok {
			return v, nil
		}
	}
	return "", errors.New("no " + key + "= in ready line " + line)
}
