package core

import (
	"context"
	"encoding/hex"
	"fmt"
	"log/slog"
	"os"

	"github.com/goray/goray/internal/errs"
	"github.com/goray/goray/internal/ids"
	pb "github.com/goray/goray/proto/goray/v1"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// Environment variables of a program that `goray deploy` runs.
const (
	// EnvDeployJob holds the hex job ID of a deployment. A driver started
	// with it attaches to that job instead of registering one of its own:
	// the actors it creates belong to the deployment and outlive the driver.
	EnvDeployJob = "GORAY_DEPLOY_JOB"
	// EnvDeployNamespace is the deployment's namespace; an attached driver
	// uses it unless runtime.WithNamespace says otherwise.
	EnvDeployNamespace = "GORAY_DEPLOY_NAMESPACE"
)

// AttachOptions configure a core attached to an existing job.
type AttachOptions struct {
	// Address of the raylet to connect to (the head's, for the gateway).
	Address string
	Token   string
	// Job is the job whose work this core submits and whose objects it owns.
	Job       ids.JobID
	Namespace string
	Logger    *slog.Logger
}

// Attach makes a core that acts as a driver of an existing job — a
// deployment's — without registering a job or keeping one alive: it owns
// the objects it puts and the results of the calls it makes, submits tasks
// by name without looking them up in this process's registry, and closing it
// does not finish the job. It is not the process's current core, so a
// process may hold many (the client gateway holds one per namespace).
func Attach(ctx context.Context, opts AttachOptions) (*Core, error) {
	log := opts.Logger
	if log == nil {
		log = DefaultLogger()
	}
	c := newCore(log, opts.Token)
	c.namespace = opts.Namespace
	if err := c.attach(ctx, opts.Address, opts.Job); err != nil {
		c.shutdown()
		return nil, err
	}
	return c, nil
}

// attach connects c to the raylet at addr as a driver of job.
func (c *Core) attach(ctx context.Context, addr string, job ids.JobID) error {
	c.attached = true
	if err := c.joinNode(ctx, addr); err != nil {
		return err
	}
	c.jobID = job
	c.putTID = ids.NewTaskID(job)
	return nil
}

// deployJobFromEnv returns the job named by EnvDeployJob, if set.
func deployJobFromEnv() (ids.JobID, bool, error) {
	s := os.Getenv(EnvDeployJob)
	if s == "" {
		return ids.JobID{}, false, nil
	}
	b, err := hex.DecodeString(s)
	if err != nil {
		return ids.JobID{}, false, fmt.Errorf("%s=%q: %w", EnvDeployJob, s, err)
	}
	j, err := ids.ParseJobID(b)
	return j, err == nil, err
}

// SubmitTaskByName is SubmitTask without the check that this process
// registered the function: the callee's binary is another program's (a
// deployment's). An unknown name fails on the worker with a not-found error.
func (c *Core) SubmitTaskByName(ctx context.Context, name string, args Args, opts TaskOptions) Ref {
	tid := ids.NewTaskID(c.jobID)
	oid := tid.ObjectID(1)
	ref, e := c.newRef(oid)
	e.holds = args.holds
	res := opts.Resources
	if len(res) == 0 {
		res = map[string]float64{"CPU": 1}
	}
	spec := &pb.TaskSpec{TaskId: tid[:], JobId: c.jobID[:], FunctionName: name, Args: args.Wire,
		ReturnObjectId: oid[:], CallerAddress: c.addr}
	c.submitWhenReady(c.trackTask(ctx, oid, &taskItem{spec: spec, entry: e}), args.Wire, res, TaskOptions{})
	return ref
}

// submitWhenReady queues item once the ref arguments this process owns are
// ready (SubmitTask's tail, shared with SubmitTaskByName).
func (c *Core) submitWhenReady(item *taskItem, args []*pb.Arg, res map[string]float64, opts TaskOptions) {
	item.retriesLeft, item.retryExceptions = DefaultMaxRetries, opts.RetryExceptions
	if opts.MaxRetries != nil {
		item.retriesLeft = *opts.MaxRetries
	}
	c.recordLineage(item, res, opts)
	deps := c.ownedPendingDeps(args)
	if len(deps) == 0 {
		c.inlineArgs(args)
		c.tasks.submit(item, res, opts)
		return
	}
	c.wg.Add(1)
	go func() {
		defer c.wg.Done()
		for _, d := range deps {
			select {
			case <-d.done:
				if d.err != nil {
					item.finish(nil, d.err)
					return
				}
			case <-c.ctx.Done():
				item.finish(nil, errs.New(errs.KindShuttingDown, item.spec.GetFunctionName(), "goray shut down before the task's arguments were ready"))
				return
			case <-item.entry.done: // cancelled
				return
			}
		}
		c.inlineArgs(args)
		c.tasks.submit(item, res, opts)
	}()
}

// Close stops an attached core without finishing its job.
func (c *Core) Close() {
	if !c.closed.CompareAndSwap(false, true) {
		return
	}
	current.CompareAndSwap(c, nil)
	c.shutdown()
}

// errAttachedRemote explains a failure to attach a deploy driver.
func errAttachedRemote(addr string, err error) error {
	if status.Code(err) == codes.Unauthenticated {
		return fmt.Errorf("the goray cluster at %s rejected this driver's token: %w", addr, err)
	}
	return err
}
