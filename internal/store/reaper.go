package store

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"syscall"
	"time"
)

// reaperScript waits until its standard input (a pipe whose only writer is
// the process that started it) reaches end of file — that process stopped,
// or died, even of SIGKILL, since the kernel closes a dead process's
// descriptors — and then removes the paths it was given.
const reaperScript = `while read -r _; do :; done; exec rm -rf -- "$@"`

// reaperWaitTimeout bounds Close's wait for the reaper to exit.
const reaperWaitTimeout = 10 * time.Second

// Reaper is a small process (a /bin/sh) that removes temporary directories
// when the process that started it is gone, however it went: a raylet that
// is SIGKILLed leaves no store or data directory behind, without waiting for
// another raylet to start and Sweep them. It runs in its own session, so a
// signal to its parent's process group does not reach it, and it exits as
// soon as its parent is gone (or Close is called), so it never outlives its
// parent by more than the time rm takes.
type Reaper struct {
	cmd *exec.Cmd
	w   *os.File // the pipe's only write end; closing it wakes the reaper
}

// StartReaper starts a reaper for paths (absolute; directories or files).
// The caller removes them itself when it stops normally, then calls Close.
func StartReaper(paths ...string) (*Reaper, error) {
	if len(paths) == 0 {
		return nil, errors.New("reaper: no paths")
	}
	for _, p := range paths {
		if p == "" || p[0] != '/' {
			return nil, fmt.Errorf("reaper: path %q is not absolute", p)
		}
	}
	r, w, err := os.Pipe() // close-on-exec: no other child inherits w
	if err != nil {
		return nil, fmt.Errorf("reaper: %w", err)
	}
	defer r.Close()
	cmd := exec.Command("/bin/sh", append([]string{"-c", reaperScript, "goray-reaper"}, paths...)...)
	cmd.Stdin = r // stdout and stderr: /dev/null
	cmd.Dir = "/"
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		w.Close()
		return nil, fmt.Errorf("reaper: start /bin/sh: %w", err)
	}
	return &Reaper{cmd: cmd, w: w}, nil
}

// Pid is the reaper's process ID.
func (r *Reaper) Pid() int { return r.cmd.Process.Pid }

// Close wakes the reaper (it removes what is left of its paths) and waits
// for it to exit. Call it after removing the paths, so that the reaper
// finds nothing left to do. It is not safe to call twice.
func (r *Reaper) Close() error {
	r.w.Close()
	done := make(chan error, 1)
	go func() { done <- r.cmd.Wait() }()
	t := time.NewTimer(reaperWaitTimeout)
	defer t.Stop()
	select {
	case err := <-done:
		return err
	case <-t.C:
		_ = r.cmd.Process.Kill()
		<-done
		return fmt.Errorf("reaper (pid %d) did not exit within %s after its pipe closed: killed", r.Pid(), reaperWaitTimeout)
	}
}
