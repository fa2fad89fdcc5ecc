package raylet

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"syscall"
	"time"

	"github.com/goray/goray/internal/errs"
	"github.com/goray/goray/internal/ids"
	"github.com/goray/goray/internal/workerenv"
	pb "github.com/goray/goray/proto/goray/v1"
)

// launch fetches the job binary and starts w's process (the pool's
// launcher).
func (r *Raylet) launch(ctx context.Context, w *worker) error { return r.launchProcess(ctx, w) }

func (r *Raylet) launchProcess(ctx context.Context, w *worker) error {
	path, err := r.ensureBinary(ctx, w.job)
	if err != nil {
		return err
	}
	cwd := filepath.Join(r.dataDir, "jobs", w.job.id.String()+"-cwd")
	if err := os.MkdirAll(cwd, 0o700); err != nil {
		return fmt.Errorf("worker working directory: %w", err)
	}
	host, _, _ := net.SplitHostPort(r.cfg.Listen)
	env := workerenv.Env{
		RayletAddress: r.addr,
		HeadAddress:   r.headAddr,
		Token:         r.token,
		JobID:         w.job.id.String(),
		WorkerID:      w.id.String(),
		NodeID:        r.nodeID.String(),
		StoreDir:      r.storeDir,
		ListenHost:    host,
	}
	env.Namespace = r.pool.namespace(w)
	stdout := newLineWriter(r.cfg.Stdout, &r.outMu)
	stderr := newLineWriter(r.cfg.Stderr, &r.outMu)

	w.oomBase = r.monitor.oomKills() // before the process can be killed
	var cmd *exec.Cmd
	for attempt := 0; ; attempt++ {
		cmd = exec.Command(path)
		cmd.Env = append(os.Environ(), env.Vars()...)
		cmd.Dir = cwd
		cmd.Stdout = stdout
		cmd.Stderr = stderr
		cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
		cmd.WaitDelay = 2 * time.Second

		err = r.pool.startProcess(w, func() error {
			if err := cmd.Start(); err != nil {
				return err
			}
			w.cmd, w.pid = cmd, cmd.Process.Pid
			r.wg.Add(2)
			return nil
		})
		if err == nil {
			break
		}
		var ge *errs.Error
		if errors.As(err, &ge) {
			return err // stopping, or the job finished
		}
		// A binary just written can be briefly busy while a concurrent
		// fork still holds its write descriptor (golang/go#22315).
		if errors.Is(err, syscall.ETXTBSY) && attempt < 50 {
			time.Sleep(20 * time.Millisecond)
			continue
		}
		return fmt.Errorf("start worker process %s: %w", path, err)
	}
	stdout.setPID(w.pid)
	stderr.setPID(w.pid)
	r.log.Debug("worker started", "worker", w.id, "pid", w.pid, "job", w.job.id, "kind", w.kind)

	go func() {
		defer r.wg.Done()
		err := cmd.Wait()
		stdout.flush()
		stderr.flush()
		r.workerExited(w, cmd.ProcessState, err)
	}()
	go func() {
		defer r.wg.Done()
		t := time.NewTimer(registerTimeout)
		defer t.Stop()
		select {
		case <-w.registered:
		case <-w.exited:
		case <-r.ctx.Done():
		case <-t.C:
			r.pool.registerTimedOut(w, errs.New(errs.KindWorkerCrashed, "", "worker process (pid %d) of job %s did not register with the raylet within %s: it was killed (does the job binary call goray's runtime.Init?)", w.pid, w.job.id, registerTimeout))
			w.kill()
		}
	}()
	return nil
}

// workerExited handles the end of a worker process.
func (r *Raylet) workerExited(w *worker, st *os.ProcessState, waitErr error) {
	desc := describeExit(st, waitErr)
	oom := r.pool.monitorCause(w)
	if oom == nil {
		oom = r.monitor.kernelOOM(w, st)
	}
	e := r.pool.exited(w, desc, oom)
	actorIDs, report, disconnected := e.actorIDs, e.report, e.disconnected
	if oom != nil {
		r.log.Warn("worker process died of out of memory", "worker", w.id, "pid", w.pid, "job", w.job.id, "exit", desc, "actors", len(actorIDs), "err", oom)
	}

	if !report {
		r.log.Debug("worker exited", "worker", w.id, "pid", w.pid, "job", w.job.id, "exit", desc)
		return
	}
	cause := desc
	if disconnected {
		cause = "its stream to the raylet ended, so the raylet killed it; " + desc
	}
	ge := errs.New(errs.KindWorkerCrashed, "", "worker process (pid %d) of job %s on node %s died", w.pid, w.job.id, r.nodeID)
	if oom != nil {
		c := *oom
		ge = &c
	} else {
		r.log.Warn("worker process died", "worker", w.id, "pid", w.pid, "job", w.job.id, "exit", cause, "actors", len(actorIDs))
	}
	ge.Cause, ge.NodeID, ge.WorkerID, ge.PID = cause, r.nodeID[:], w.id[:], int32(w.pid)
	ctx, cancel := context.WithTimeout(r.ctx, headCallTimeout)
	defer cancel()
	if _, err := r.head.ReportWorkerDeath(ctx, &pb.ReportWorkerDeathRequest{
		NodeId: r.nodeID[:], WorkerId: w.id[:], ActorIds: actorIDs, Cause: ge.Proto(),
	}); err != nil && r.ctx.Err() == nil {
		r.log.Warn("report worker death to head failed", "worker", w.id, "err", err)
	}
}

func describeExit(st *os.ProcessState, waitErr error) string {
	if st == nil {
		if waitErr != nil {
			return "wait failed: " + waitErr.Error()
		}
		return "unknown exit"
	}
	if ws, ok := st.Sys().(syscall.WaitStatus); ok {
		switch {
		case ws.Signaled():
			return fmt.Sprintf("killed by signal %s (%d)", ws.Signal(), int(ws.Signal()))
		case ws.Exited():
			return fmt.Sprintf("exit status %d", ws.ExitStatus())
		}
	}
	return st.String()
}

// waitExited waits for the workers' processes to be gone, up to timeout.
func waitExited(ws []*worker, timeout time.Duration, log *slog.Logger) {
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	for _, w := range ws {
		select {
		case <-w.exited:
		case <-deadline.C:
			log.Error("worker processes did not exit after SIGKILL", "timeout", timeout)
			return
		}
	}
}

// registerWorker serves one worker's RegisterWorker stream.
func (r *Raylet) registerWorker(req *pb.RegisterWorkerRequest, stream pb.NodeService_RegisterWorkerServer) error {
	id, err := ids.ParseWorkerID(req.GetWorkerId())
	if err != nil {
		return errs.New(errs.KindInvalidArgument, "", "RegisterWorker: %v", err)
	}
	addr := req.GetAddress()
	if _, _, err := net.SplitHostPort(addr); err != nil || len(addr) > 512 {
		return errs.New(errs.KindInvalidArgument, "", "RegisterWorker: worker address %.64q is not HOST:PORT", addr)
	}
	w, err := r.pool.register(id, addr)
	if err != nil {
		return err
	}
	if req.GetPid() != 0 && int(req.GetPid()) != w.pid {
		r.log.Warn("worker registered with a different pid than the raylet started", "worker", id, "started_pid", w.pid, "reported_pid", req.GetPid())
	}
	r.log.Debug("worker registered", "worker", id, "pid", w.pid, "address", addr)

	if err := stream.Send(&pb.RegisterWorkerResponse{NodeId: r.nodeID[:], StoreDir: r.storeDir, HeadAddress: r.headAddr}); err != nil {
		r.disconnect(w)
		return err
	}
	select {
	case <-w.streamDone:
		return nil
	case <-r.ctx.Done():
		return nil
	case <-stream.Context().Done():
		r.disconnect(w)
		return nil
	}
}

// disconnect kills a worker whose RegisterWorker stream ended on its side,
// unless its process is exiting anyway.
func (r *Raylet) disconnect(w *worker) {
	r.pool.markFailing(w)
	t := time.NewTimer(time.Second)
	defer t.Stop()
	select {
	case <-w.exited:
		return
	case <-r.ctx.Done():
		return
	case <-t.C:
	}
	if r.pool.markDisconnected(w) {
		w.kill()
	}
}

// ensureBinary returns the verified executable of the job, fetching it once.
func (r *Raylet) ensureBinary(ctx context.Context, j *job) (string, error) {
	if p := r.pool.jobBinary(j); p != "" {
		return p, nil
	}
	ch := r.jobFlight.DoChan(j.id.String(), func() (any, error) {
		fctx, cancel := context.WithTimeout(r.ctx, binaryFetchBudget)
		defer cancel()
		resp, err := r.head.GetJob(fctx, &pb.GetJobRequest{JobId: j.id[:]})
		if err != nil {
			return "", fmt.Errorf("get job %s from head: %w", j.id, errs.FromStatus(err))
		}
		info := resp.GetJob()
		if info.GetFinished() {
			return "", errJobFinished(j.id)
		}
		sum := info.GetBinarySha256()
		if len(sum) != sha256.Size {
			return "", errs.New(errs.KindInvalidArgument, "", "job %s: head sent a binary hash of %d bytes, want %d", j.id, len(sum), sha256.Size)
		}
		path, err := r.fetchBinary(fctx, sum)
		if err != nil {
			return "", err
		}
		r.pool.setJobBinary(j, path, info.GetNamespace())
		return path, nil
	})
	select {
	case res := <-ch:
		if res.Err != nil {
			return "", res.Err
		}
		return res.Val.(string), nil
	case <-ctx.Done():
		return "", ctx.Err()
	}
}

// fetchBinary downloads and verifies the binary with SHA-256 sum, once per
// sum.
func (r *Raylet) fetchBinary(ctx context.Context, sum []byte) (string, error) {
	key := hex.EncodeToString(sum)
	v, err, _ := r.binFlight.Do(key, func() (any, error) {
		if p, ok := r.pool.binary(key); ok {
			return p, nil
		}
		p, err := r.downloadBinary(ctx, sum)
		if err != nil {
			return "", err
		}
		r.pool.addBinary(key, p)
		return p, nil
	})
	if err != nil {
		return "", err
	}
	return v.(string), nil
}

func (r *Raylet) downloadBinary(ctx context.Context, sum []byte) (string, error) {
	key := hex.EncodeToString(sum)
	dir := filepath.Join(r.dataDir, "jobs")
	dst := filepath.Join(dir, key)
	stream, err := r.head.FetchJobBinary(ctx, &pb.FetchJobBinaryRequest{BinarySha256: sum})
	if err != nil {
		return "", fmt.Errorf("fetch job binary %s: %w", key[:12], errs.FromStatus(err))
	}
	f, err := os.CreateTemp(dir, key+".tmp-*")
	if err != nil {
		return "", fmt.Errorf("fetch job binary: %w", err)
	}
	tmp := f.Name()
	ok := false
	defer func() {
		if !ok {
			f.Close()
			os.Remove(tmp)
		}
	}()
	h := sha256.New()
	var size, got uint64
	sizeKnown := false
	for {
		msg, err := stream.Recv()
		if err == io.EOF {
			break
		}
		if err != nil {
			return "", fmt.Errorf("fetch job binary %s: %w", key[:12], errs.FromStatus(err))
		}
		if !sizeKnown && msg.GetSize() > 0 {
			size, sizeKnown = msg.GetSize(), true
		}
		got += uint64(len(msg.GetChunk()))
		if sizeKnown && got > size {
			return "", fmt.Errorf("fetch job binary %s: head sent more than the announced %d bytes", key[:12], size)
		}
		if _, err := f.Write(msg.GetChunk()); err != nil {
			return "", fmt.Errorf("fetch job binary: %w", err)
		}
		h.Write(msg.GetChunk())
	}
	if sizeKnown && got != size {
		return "", fmt.Errorf("fetch job binary %s: got %d bytes, want %d", key[:12], got, size)
	}
	if !bytes.Equal(h.Sum(nil), sum) {
		return "", errs.New(errs.KindInvalidArgument, "", "job binary hash mismatch: got sha256 %x, want %s; the file was deleted", h.Sum(nil), key)
	}
	if err := f.Chmod(0o755); err != nil {
		return "", fmt.Errorf("fetch job binary: %w", err)
	}
	if err := f.Close(); err != nil {
		return "", fmt.Errorf("fetch job binary: %w", err)
	}
	if err := os.Rename(tmp, dst); err != nil {
		return "", fmt.Errorf("fetch job binary: %w", err)
	}
	ok = true
	r.log.Info("job binary fetched", "sha256", key[:12], "bytes", got)
	return dst, nil
}

// lineWriter copies a worker's output line by line to out, each line
// prefixed "(worker pid=N) ".
type lineWriter struct {
	out   io.Writer
	outMu *sync.Mutex
	ready chan struct{} // closed once pid is set
	pid   int
	buf   []byte
}

const maxLine = 64 << 10

func newLineWriter(out io.Writer, mu *sync.Mutex) *lineWriter {
	return &lineWriter{out: out, outMu: mu, ready: make(chan struct{})}
}

func (l *lineWriter) setPID(pid int) { l.pid = pid; close(l.ready) }

func (l *lineWriter) Write(p []byte) (int, error) {
	<-l.ready
	l.buf = append(l.buf, p...)
	for {
		i := bytes.IndexByte(l.buf, '\n')
		if i < 0 {
			if len(l.buf) >= maxLine {
				l.emit(l.buf)
				l.buf = l.buf[:0]
			}
			return len(p), nil
		}
		l.emit(l.buf[:i])
		l.buf = l.buf[i+1:]
	}
}

func (l *lineWriter) emit(line []byte) {
	l.outMu.Lock()
	defer l.outMu.Unlock()
	fmt.Fprintf(l.out, "(worker pid=%d) %s\n", l.pid, line)
}

// flush writes a last unterminated line; call after the process is gone.
func (l *lineWriter) flush() {
	select {
	case <-l.ready:
	default:
		return
	}
	if len(l.buf) > 0 {
		l.emit(l.buf)
		l.buf = nil
	}
}
