package runtime

import "github.com/goray/goray/internal/errs"

// Error is every goray error that crosses a process. Test it with
// errors.Is(err, runtime.ErrX), and read it with errors.As:
//
//	var e *runtime.Error
//	if errors.As(err, &e) { ... }
//
// Its fields: Kind (what failed; prints in words), Message (what went wrong,
// for the user), Name (the registered function, actor type or method
// involved, if any), RemoteStack (the stack of the goroutine that panicked in
// user code, for ErrTaskFailed; Error() leaves it out, so the message stays
// on one line), Cause (further detail, such as how a process exited), and
// NodeID, WorkerID and PID of the process involved, when known.
type Error = errs.Error

// Kind classifies an Error; String names it in words ("task failed").
type Kind = errs.Kind

// The kinds of Error.
const (
	KindTaskFailed       = errs.KindTaskFailed
	KindActorDied        = errs.KindActorDied
	KindObjectLost       = errs.KindObjectLost
	KindOwnerDied        = errs.KindOwnerDied
	KindWorkerCrashed    = errs.KindWorkerCrashed
	KindNodeDied         = errs.KindNodeDied
	KindInfeasible       = errs.KindInfeasible
	KindTimeout          = errs.KindTimeout
	KindNotFound         = errs.KindNotFound
	KindInvalidArgument  = errs.KindInvalidArgument
	KindAlreadyExists    = errs.KindAlreadyExists
	KindShuttingDown     = errs.KindShuttingDown
	KindJobFinished      = errs.KindJobFinished
	KindObjectStoreFull  = errs.KindObjectStoreFull
	KindOutOfMemory      = errs.KindOutOfMemory
	KindCancelled        = errs.KindCancelled
	KindObjectFreed      = errs.KindObjectFreed
	KindCompacted        = errs.KindCompacted
	KindLockTimeout      = errs.KindLockTimeout
	KindSessionLost      = errs.KindSessionLost
	KindUnavailable      = errs.KindUnavailable
	KindUnauthenticated  = errs.KindUnauthenticated
	KindPermissionDenied = errs.KindPermissionDenied
	KindInternal         = errs.KindInternal
)

// Sentinels: errors.Is(err, ErrX) holds for every Error of that kind.
var (
	// ErrTaskFailed: user code returned an error or panicked (RemoteStack
	// holds the panicking goroutine's stack).
	ErrTaskFailed = errs.ErrTaskFailed
	// ErrActorDied: the actor was killed, or its process or node died.
	ErrActorDied = errs.ErrActorDied
	// ErrObjectLost: every copy of the object is gone.
	ErrObjectLost = errs.ErrObjectLost
	// ErrOwnerDied: the process that owns the object died.
	ErrOwnerDied = errs.ErrOwnerDied
	// ErrWorkerCrashed: the worker process running the call died.
	ErrWorkerCrashed = errs.ErrWorkerCrashed
	// ErrNodeDied: the node running the call died.
	ErrNodeDied = errs.ErrNodeDied
	// ErrInfeasible: no node in the cluster can ever fit the request.
	ErrInfeasible = errs.ErrInfeasible
	// ErrTimeout: a deadline passed (errors.Is with context.DeadlineExceeded
	// holds too).
	ErrTimeout = errs.ErrTimeout
	// ErrNotFound: an actor type, method, function or named actor is not
	// registered or does not exist.
	ErrNotFound = errs.ErrNotFound
	// ErrInvalidArgument: an argument or result could not be decoded into the
	// type the other side expects.
	ErrInvalidArgument = errs.ErrInvalidArgument
	// ErrAlreadyExists: something of that name already exists, e.g. a named
	// actor in its namespace (actor.WithGetIfExists returns it instead).
	ErrAlreadyExists = errs.ErrAlreadyExists
	// ErrShuttingDown: goray, or the process or server asked, is shutting
	// down (runtime.Shutdown was called, or the head or a raylet is
	// stopping); the work was not done.
	ErrShuttingDown = errs.ErrShuttingDown
	// ErrJobFinished: the job has finished, so no new actor or task runs for
	// it.
	ErrJobFinished = errs.ErrJobFinished
	// ErrObjectStoreFull: the node's object store cannot hold the value even
	// after evicting and spilling all it may (the value is larger than the
	// store): the message names the size and the capacity.
	ErrObjectStoreFull = errs.ErrObjectStoreFull
	// ErrOutOfMemory: the node ran short of memory and the worker running
	// the call was killed (by the raylet's memory monitor or the kernel);
	// the message names the task, the node and the figures.
	ErrOutOfMemory = errs.ErrOutOfMemory
	// ErrCancelled: the call was cancelled (task.Cancel of its ref, or its
	// caller's context ended).
	ErrCancelled = errs.ErrCancelled
	// ErrObjectFreed: the object was freed (released, or every ref to it
	// was dropped) before this Get.
	ErrObjectFreed = errs.ErrObjectFreed
	// ErrCompacted: a watch or read asked for a revision etcd has compacted
	// away; the Error's Revision is the compact revision. Read the current
	// state and watch from its revision (see docs/coordination.md).
	ErrCompacted = errs.ErrCompacted
	// ErrLockTimeout: a coord lock was not acquired within its acquire
	// timeout; it also matches ErrTimeout and context.DeadlineExceeded.
	ErrLockTimeout = errs.ErrLockTimeout
	// ErrSessionLost: a coord session's lease expired or was revoked, so
	// its locks, leadership and keys are gone; start a new session.
	ErrSessionLost = errs.ErrSessionLost
	// ErrUnavailable: a process or the cluster could not be reached (the
	// connection failed or was refused); the call may succeed later.
	ErrUnavailable = errs.ErrUnavailable
	// ErrUnauthenticated: the cluster rejected this process's token: set
	// GORAY_TOKEN or GORAY_TOKEN_FILE to the token `raylet --head` wrote.
	ErrUnauthenticated = errs.ErrUnauthenticated
	// ErrPermissionDenied: the credential does not allow the call.
	ErrPermissionDenied = errs.ErrPermissionDenied
	// ErrInternal: a server failed in a way no other kind describes (a bug,
	// or a failure of its storage); the message says what.
	ErrInternal = errs.ErrInternal
)

// ErrNotInitialized is returned by every SDK call made before Init or after
// Shutdown. It is not an Error and has no Kind.
var ErrNotInitialized = errs.ErrNotInitialized
