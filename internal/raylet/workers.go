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

	"google.golang.org/grpc"

	"github.com/goray/goray/internal/errs"
	"github.com/goray/goray/internal/ids"
	"github.com/goray/goray/internal/rpc"
	"github.com/goray/goray/internal/sched"
	"github.com/goray/goray/internal/workerenv"
	pb "github.com/goray/goray/proto/goray/v1"
)

type workerKind int

const (
	kindTask      workerKind = iota // in the lease pool
	kindActorHost                   // hosts actors, never leased
)

func (k workerKind) String() string {
	if k == kindActorHost {
		return "actor-host"
	}
	return "task"
}

// job is this node's state of one job.
type job struct {
	id      ids.JobID
	binPath string // verified executable, once fetched
	// namespace is the job's namespace, set with binPath from the head's job
	// table; its workers get it in their environment.
	namespace string
	finished  bool
	// finishDone is closed when the finish-job cleanup is complete.
	finishDone chan struct{}
	workers    map[ids.WorkerID]*worker
	// changed is closed (and replaced) whenever a worker of the job becomes
	// idle, registers, dies or leaves.
	changed chan struct{}
}

func (j *job) broadcastLocked() {
	close(j.changed)
	j.changed = make(chan struct{})
}

// worker is one worker process started by this raylet.
type worker struct {
	id   ids.WorkerID
	job  *job
	kind workerKind

	// Set once at launch, under r.mu.
	cmd *exec.Cmd
	pid int

	registered chan struct{} // closed when RegisterWorker arrived
	exited     chan struct{} // closed when the process is gone (or never started)
	streamDone chan struct{} // closed to end the RegisterWorker stream
	closeOnce  sync.Once

	// Guarded by r.mu.
	addr         string
	isRegistered bool
	dead         bool
	// failing is set as soon as the worker is known to be going (its stream
	// ended, or a lease holder saw it fail), before its process is reaped:
	// it gets no new leases or actors.
	failing      bool
	reserved     bool // a lease requester started it and will take it
	lease        *lease
	actors       map[ids.ActorID]*actor
	onPurpose    bool   // the raylet killed it on purpose
	disconnected bool   // its RegisterWorker stream ended first
	startErr     error  // why it failed to start
	exitDesc     string // how it exited
	conn         *grpc.ClientConn
}

func (w *worker) closeStream() { w.closeOnce.Do(func() { close(w.streamDone) }) }

// kill SIGKILLs the worker's process group.
func (w *worker) kill() {
	w.closeStream()
	if w.pid > 0 {
		_ = syscall.Kill(-w.pid, syscall.SIGKILL)
		_ = syscall.Kill(w.pid, syscall.SIGKILL)
	}
}

type lease struct {
	id     ids.LeaseID
	worker *worker
	res    sched.Resources
}

type actor struct {
	id     ids.ActorID
	worker *worker
	res    sched.Resources
	ready  bool
	// The placement group it was placed in (spec.scheduling_strategy), if
	// any, and the bundle index (-1: any bundle).
	inPG   bool
	pg     ids.PlacementGroupID
	bundle int32
}

// jobLocked returns the job's state, creating it.
func (r *Raylet) jobLocked(id ids.JobID) *job {
	j := r.jobs[id]
	if j == nil {
		j = &job{id: id, workers: make(map[ids.WorkerID]*worker), changed: make(chan struct{}), finishDone: make(chan struct{})}
		r.jobs[id] = j
	}
	return j
}

func errJobFinished(id ids.JobID) error {
	return errs.New(errs.KindJobFinished, "", "job %s has finished: no new work runs for it", id)
}

// newWorkerLocked adds a worker entry that launch will start.
func (r *Raylet) newWorkerLocked(j *job, kind workerKind) *worker {
	w := &worker{
		id:         ids.NewWorkerID(),
		job:        j,
		kind:       kind,
		registered: make(chan struct{}),
		exited:     make(chan struct{}),
		streamDone: make(chan struct{}),
		actors:     make(map[ids.ActorID]*actor),
	}
	j.workers[w.id] = w
	r.workers[w.id] = w
	return w
}

// launch fetches the job binary and starts w's process. On failure w is
// removed (and its actors released).
func (r *Raylet) launch(ctx context.Context, w *worker) error {
	err := r.launchProcess(ctx, w)
	if err != nil {
		r.mu.Lock()
		if !w.dead {
			w.startErr = err
			r.workerGoneLocked(w)
		}
		r.mu.Unlock()
	}
	return err
}

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
	r.mu.Lock()
	env.Namespace = w.job.namespace
	r.mu.Unlock()
	stdout := newLineWriter(r.cfg.Stdout, &r.outMu)
	stderr := newLineWriter(r.cfg.Stderr, &r.outMu)

	var cmd *exec.Cmd
	for attempt := 0; ; attempt++ {
		cmd = exec.Command(path)
		cmd.Env = append(os.Environ(), env.Vars()...)
		cmd.Dir = cwd
		cmd.Stdout = stdout
		cmd.Stderr = stderr
		cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
		cmd.WaitDelay = 2 * time.Second

		r.mu.Lock()
		if r.stopping || w.job.finished || w.dead {
			r.mu.Unlock()
			if w.job.finished {
				return errJobFinished(w.job.id)
			}
			return errStopping
		}
		err = cmd.Start()
		if err == nil {
			w.cmd, w.pid = cmd, cmd.Process.Pid
			r.wg.Add(2)
			r.mu.Unlock()
			break
		}
		r.mu.Unlock()
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
			r.mu.Lock()
			if !w.isRegistered && !w.dead {
				w.startErr = errs.New(errs.KindWorkerCrashed, "", "worker process (pid %d) of job %s did not register with the raylet within %s: it was killed (does the job binary call goray's runtime.Init?)", w.pid, w.job.id, registerTimeout)
				w.onPurpose = true
			}
			r.mu.Unlock()
			w.kill()
		}
	}()
	return nil
}

// waitRegistered waits until w registered, failed or ctx ended.
func (r *Raylet) waitRegistered(ctx context.Context, w *worker) error {
	select {
	case <-w.registered:
	case <-w.exited:
	case <-ctx.Done():
		return ctx.Err()
	case <-r.ctx.Done():
		return errStopping
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if w.dead {
		if w.startErr != nil {
			return w.startErr
		}
		return errs.New(errs.KindWorkerCrashed, "", "worker process (pid %d) of job %s exited before it registered: %s", w.pid, w.job.id, w.exitDesc)
	}
	return nil
}

// workerExited handles the end of a worker process.
func (r *Raylet) workerExited(w *worker, st *os.ProcessState, waitErr error) {
	desc := describeExit(st, waitErr)
	r.mu.Lock()
	w.exitDesc = desc
	actorIDs := make([][]byte, 0, len(w.actors))
	for id := range w.actors {
		actorIDs = append(actorIDs, id[:])
	}
	report := !w.onPurpose && !r.stopping && !w.job.finished
	disconnected := w.disconnected
	r.workerGoneLocked(w)
	r.mu.Unlock()

	if !report {
		r.log.Debug("worker exited", "worker", w.id, "pid", w.pid, "job", w.job.id, "exit", desc)
		return
	}
	cause := desc
	if disconnected {
		cause = "its stream to the raylet ended, so the raylet killed it; " + desc
	}
	r.log.Warn("worker process died", "worker", w.id, "pid", w.pid, "job", w.job.id, "exit", cause, "actors", len(actorIDs))
	e := errs.New(errs.KindWorkerCrashed, "", "worker process (pid %d) of job %s on node %s died", w.pid, w.job.id, r.nodeID)
	e.Cause, e.NodeID, e.WorkerID, e.PID = cause, r.nodeID[:], w.id[:], int32(w.pid)
	ctx, cancel := context.WithTimeout(r.ctx, headCallTimeout)
	defer cancel()
	if _, err := r.head.ReportWorkerDeath(ctx, &pb.ReportWorkerDeathRequest{
		NodeId: r.nodeID[:], WorkerId: w.id[:], ActorIds: actorIDs, Cause: e.Proto(),
	}); err != nil && r.ctx.Err() == nil {
		r.log.Warn("report worker death to head failed", "worker", w.id, "err", err)
	}
}

// workerGoneLocked removes a dead (or never started) worker: its lease and
// actors are released and waiters woken.
func (r *Raylet) workerGoneLocked(w *worker) {
	if w.dead {
		return
	}
	w.dead = true
	close(w.exited)
	w.closeStream()
	delete(r.workers, w.id)
	delete(w.job.workers, w.id)
	if w.lease != nil {
		r.removeLeaseLocked(w.lease)
	}
	for _, a := range w.actors {
		r.removeActorLocked(a)
	}
	if w.conn != nil {
		w.conn.Close()
		w.conn = nil
	}
	w.job.broadcastLocked()
}

func (r *Raylet) removeLeaseLocked(l *lease) {
	if r.leases[l.id] != l {
		return
	}
	delete(r.leases, l.id)
	if l.worker.lease == l {
		l.worker.lease = nil
	}
	r.releaseLocked(l.res)
}

func (r *Raylet) removeActorLocked(a *actor) {
	if r.actors[a.id] != a {
		return
	}
	delete(r.actors, a.id)
	delete(a.worker.actors, a.id)
	r.releaseLocked(a.res)
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

// workerConn is the client connection to a registered worker's WorkerService.
func (r *Raylet) workerConn(w *worker) (pb.WorkerServiceClient, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if w.dead {
		return nil, errs.New(errs.KindWorkerCrashed, "", "worker %s died", w.id)
	}
	if w.conn == nil {
		c, err := rpc.Dial(w.addr, r.token)
		if err != nil {
			return nil, err
		}
		w.conn = c
	}
	return pb.NewWorkerServiceClient(w.conn), nil
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
	r.mu.Lock()
	w := r.workers[id]
	switch {
	case w == nil:
		r.mu.Unlock()
		return errs.New(errs.KindNotFound, "", "RegisterWorker: worker %s was not started by this raylet (node %s)", id, r.nodeID)
	case w.isRegistered:
		r.mu.Unlock()
		return errs.New(errs.KindInvalidArgument, "", "RegisterWorker: worker %s is already registered", id)
	}
	if req.GetPid() != 0 && int(req.GetPid()) != w.pid {
		r.log.Warn("worker registered with a different pid than the raylet started", "worker", id, "started_pid", w.pid, "reported_pid", req.GetPid())
	}
	w.addr = addr
	w.isRegistered = true
	close(w.registered)
	w.job.broadcastLocked()
	r.mu.Unlock()
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
	r.mu.Lock()
	w.failing = true
	r.mu.Unlock()
	t := time.NewTimer(time.Second)
	defer t.Stop()
	select {
	case <-w.exited:
		return
	case <-r.ctx.Done():
		return
	case <-t.C:
	}
	r.mu.Lock()
	if w.dead {
		r.mu.Unlock()
		return
	}
	w.disconnected = true
	r.mu.Unlock()
	w.kill()
}

// ensureBinary returns the verified executable of the job, fetching it once.
func (r *Raylet) ensureBinary(ctx context.Context, j *job) (string, error) {
	r.mu.Lock()
	p := j.binPath
	r.mu.Unlock()
	if p != "" {
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
		r.mu.Lock()
		j.binPath, j.namespace = path, info.GetNamespace()
		r.mu.Unlock()
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
		r.mu.Lock()
		p, ok := r.binaries[key]
		r.mu.Unlock()
		if ok {
			return p, nil
		}
		p, err := r.downloadBinary(ctx, sum)
		if err != nil {
			return "", err
		}
		r.mu.Lock()
		r.binaries[key] = p
		r.mu.Unlock()
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
