// Package errs is goray's one error taxonomy. Every error that crosses a
// process boundary is an *Error with a Kind; callers test it with errors.Is
// against the sentinels below (re-exported by package runtime) and read its
// fields with errors.As. On the wire an *Error travels as a gRPC status whose
// details hold a goray.v1.ErrorInfo, and comes back as the same *Error.
package errs

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"unicode/utf8"

	pb "github.com/goray/goray/proto/goray/v1"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// Kind classifies an error.
type Kind int32

// The kinds, one per goray.v1.ErrorKind.
const (
	KindTaskFailed      = Kind(pb.ErrorKind_ERROR_KIND_TASK_FAILED)
	KindActorDied       = Kind(pb.ErrorKind_ERROR_KIND_ACTOR_DIED)
	KindObjectLost      = Kind(pb.ErrorKind_ERROR_KIND_OBJECT_LOST)
	KindOwnerDied       = Kind(pb.ErrorKind_ERROR_KIND_OWNER_DIED)
	KindWorkerCrashed   = Kind(pb.ErrorKind_ERROR_KIND_WORKER_CRASHED)
	KindNodeDied        = Kind(pb.ErrorKind_ERROR_KIND_NODE_DIED)
	KindInfeasible      = Kind(pb.ErrorKind_ERROR_KIND_INFEASIBLE)
	KindTimeout         = Kind(pb.ErrorKind_ERROR_KIND_TIMEOUT)
	KindNotFound        = Kind(pb.ErrorKind_ERROR_KIND_NOT_FOUND)
	KindInvalidArgument = Kind(pb.ErrorKind_ERROR_KIND_INVALID_ARGUMENT)
	KindAlreadyExists   = Kind(pb.ErrorKind_ERROR_KIND_ALREADY_EXISTS)
	KindShuttingDown    = Kind(pb.ErrorKind_ERROR_KIND_SHUTTING_DOWN)
	KindJobFinished     = Kind(pb.ErrorKind_ERROR_KIND_JOB_FINISHED)
	KindObjectStoreFull = Kind(pb.ErrorKind_ERROR_KIND_OBJECT_STORE_FULL)
	KindOutOfMemory     = Kind(pb.ErrorKind_ERROR_KIND_OUT_OF_MEMORY)
	KindCancelled       = Kind(pb.ErrorKind_ERROR_KIND_CANCELLED)
	KindObjectFreed     = Kind(pb.ErrorKind_ERROR_KIND_OBJECT_FREED)
	// The coordination service's kinds (package coord, on etcd).
	KindCompacted   = Kind(pb.ErrorKind_ERROR_KIND_COMPACTED)
	KindLockTimeout = Kind(pb.ErrorKind_ERROR_KIND_LOCK_TIMEOUT)
	KindSessionLost = Kind(pb.ErrorKind_ERROR_KIND_SESSION_LOST)
	// The kinds of failures below goray's own: a status that carries no goray
	// error (from the transport, or a server that is not goray's) comes back
	// as one of these, keeping its gRPC code (see FromStatus).
	KindUnavailable      = Kind(pb.ErrorKind_ERROR_KIND_UNAVAILABLE)
	KindUnauthenticated  = Kind(pb.ErrorKind_ERROR_KIND_UNAUTHENTICATED)
	KindPermissionDenied = Kind(pb.ErrorKind_ERROR_KIND_PERMISSION_DENIED)
	KindInternal         = Kind(pb.ErrorKind_ERROR_KIND_INTERNAL)
)

// Sentinels: errors.Is(err, ErrX) holds for every *Error of that kind.
var (
	ErrTaskFailed       = errors.New("task failed")
	ErrActorDied        = errors.New("actor died")
	ErrObjectLost       = errors.New("object lost")
	ErrOwnerDied        = errors.New("owner died")
	ErrWorkerCrashed    = errors.New("worker crashed")
	ErrNodeDied         = errors.New("node died")
	ErrInfeasible       = errors.New("infeasible")
	ErrTimeout          = errors.New("timeout")
	ErrNotFound         = errors.New("not found")
	ErrInvalidArgument  = errors.New("invalid argument")
	ErrAlreadyExists    = errors.New("already exists")
	ErrShuttingDown     = errors.New("shutting down")
	ErrJobFinished      = errors.New("job finished")
	ErrObjectStoreFull  = errors.New("object store full")
	ErrOutOfMemory      = errors.New("out of memory")
	ErrCancelled        = errors.New("cancelled")
	ErrObjectFreed      = errors.New("object freed")
	ErrCompacted        = errors.New("revision compacted")
	ErrLockTimeout      = errors.New("lock timeout")
	ErrSessionLost      = errors.New("session lost")
	ErrUnavailable      = errors.New("unavailable")
	ErrUnauthenticated  = errors.New("unauthenticated")
	ErrPermissionDenied = errors.New("permission denied")
	ErrInternal         = errors.New("internal error")
)

// ErrNotInitialized is returned by SDK calls made before runtime.Init or
// after runtime.Shutdown. It never crosses a process, so it has no Kind.
var ErrNotInitialized = errors.New("goray is not initialised: call runtime.Init(ctx) first")

var sentinels = map[Kind]error{
	KindTaskFailed:       ErrTaskFailed,
	KindActorDied:        ErrActorDied,
	KindObjectLost:       ErrObjectLost,
	KindOwnerDied:        ErrOwnerDied,
	KindWorkerCrashed:    ErrWorkerCrashed,
	KindNodeDied:         ErrNodeDied,
	KindInfeasible:       ErrInfeasible,
	KindTimeout:          ErrTimeout,
	KindNotFound:         ErrNotFound,
	KindInvalidArgument:  ErrInvalidArgument,
	KindAlreadyExists:    ErrAlreadyExists,
	KindShuttingDown:     ErrShuttingDown,
	KindJobFinished:      ErrJobFinished,
	KindObjectStoreFull:  ErrObjectStoreFull,
	KindOutOfMemory:      ErrOutOfMemory,
	KindCancelled:        ErrCancelled,
	KindObjectFreed:      ErrObjectFreed,
	KindCompacted:        ErrCompacted,
	KindLockTimeout:      ErrLockTimeout,
	KindSessionLost:      ErrSessionLost,
	KindUnavailable:      ErrUnavailable,
	KindUnauthenticated:  ErrUnauthenticated,
	KindPermissionDenied: ErrPermissionDenied,
	KindInternal:         ErrInternal,
}

var codesByKind = map[Kind]codes.Code{
	KindTaskFailed:       codes.Aborted,
	KindActorDied:        codes.Unavailable,
	KindObjectLost:       codes.DataLoss,
	KindOwnerDied:        codes.Unavailable,
	KindWorkerCrashed:    codes.Unavailable,
	KindNodeDied:         codes.Unavailable,
	KindInfeasible:       codes.FailedPrecondition,
	KindTimeout:          codes.DeadlineExceeded,
	KindNotFound:         codes.NotFound,
	KindInvalidArgument:  codes.InvalidArgument,
	KindAlreadyExists:    codes.AlreadyExists,
	KindShuttingDown:     codes.Unavailable,
	KindJobFinished:      codes.FailedPrecondition,
	KindObjectStoreFull:  codes.ResourceExhausted,
	KindOutOfMemory:      codes.ResourceExhausted,
	KindCancelled:        codes.Canceled,
	KindObjectFreed:      codes.NotFound,
	KindCompacted:        codes.OutOfRange,
	KindLockTimeout:      codes.DeadlineExceeded,
	KindSessionLost:      codes.FailedPrecondition,
	KindUnavailable:      codes.Unavailable,
	KindUnauthenticated:  codes.Unauthenticated,
	KindPermissionDenied: codes.PermissionDenied,
	KindInternal:         codes.Internal,
}

// kindsByCode is the kind of a status that carries no goray error.
var kindsByCode = map[codes.Code]Kind{
	codes.Unavailable:        KindUnavailable,
	codes.Unauthenticated:    KindUnauthenticated,
	codes.PermissionDenied:   KindPermissionDenied,
	codes.DeadlineExceeded:   KindTimeout,
	codes.NotFound:           KindNotFound,
	codes.Unimplemented:      KindNotFound, // the server does not serve that call
	codes.InvalidArgument:    KindInvalidArgument,
	codes.OutOfRange:         KindInvalidArgument,
	codes.ResourceExhausted:  KindInvalidArgument, // e.g. a message over the size bound
	codes.FailedPrecondition: KindInvalidArgument,
	codes.AlreadyExists:      KindAlreadyExists,
	codes.Aborted:            KindUnavailable,
}

// String names the kind in words ("task failed", "actor died", ...).
func (k Kind) String() string {
	if s, ok := sentinels[k]; ok {
		return s.Error()
	}
	return fmt.Sprintf("error kind %d", int32(k))
}

// Code is the gRPC code an error of kind k travels with.
func (k Kind) Code() codes.Code {
	if c, ok := codesByKind[k]; ok {
		return c
	}
	return codes.Unknown
}

// Error is a goray error of one Kind.
type Error struct {
	Kind Kind
	// Message says what went wrong, in words for the user.
	Message string
	// Name is the registered function, actor type or method involved, if any.
	Name string
	// RemoteStack is the stack of the goroutine that failed in user code.
	// Error() leaves it out, so that the message stays on one line.
	RemoteStack string
	// Cause is further detail, e.g. how a process exited.
	Cause    string
	NodeID   []byte
	WorkerID []byte
	PID      int32
	// Revision is the coordination revision the error is about: the
	// compact revision of a KindCompacted error.
	Revision int64
	// code is the gRPC code of the status e was made from when it carried
	// no goray error (FromStatus); 0 (OK) for e.Kind's own code.
	code codes.Code
}

// New makes an *Error of kind k.
//
// What it quotes is bounded: a string or []byte argument longer than
// MaxQuoted is cut to a prefix (saying how long it was), as is the name,
// and the whole message is cut at MaxMessage, so that input echoed in an
// error (a 1 MiB function name) cannot make a reply too large to send.
func New(k Kind, name, format string, args ...any) *Error {
	clipped := false
	for i, a := range args {
		var n int
		switch v := a.(type) {
		case string:
			n = len(v)
		case []byte:
			n = len(v)
		}
		if n <= MaxQuoted {
			continue
		}
		if !clipped {
			args = append([]any(nil), args...) // the caller's slice stays as it was
			clipped = true
		}
		switch v := a.(type) {
		case string:
			args[i] = Clip(v, MaxQuoted)
		case []byte:
			args[i] = []byte(Clip(string(v), MaxQuoted))
		}
	}
	return &Error{Kind: k, Name: Clip(name, MaxQuoted), Message: Clip(fmt.Sprintf(format, args...), MaxMessage)}
}

// Bounds on what an error quotes (New).
const (
	MaxQuoted  = 512
	MaxMessage = 16 << 10
)

// Clip is s cut to at most n bytes (at a rune boundary) followed by how
// long it was, or s itself when it is no longer.
func Clip(s string, n int) string {
	if len(s) <= n {
		return s
	}
	cut := n
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return fmt.Sprintf("%s… (%d bytes in all)", s[:cut], len(s))
}

// Error is the one-line message: kind, name, message, cause and pid. The
// remote stack, when there is one, is only in RemoteStack.
func (e *Error) Error() string {
	var b strings.Builder
	b.WriteString(e.Kind.String())
	if e.Name != "" {
		fmt.Fprintf(&b, " (%s)", e.Name)
	}
	if e.Message != "" {
		b.WriteString(": ")
		b.WriteString(e.Message)
	}
	if e.Cause != "" {
		fmt.Fprintf(&b, " [cause: %s]", e.Cause)
	}
	if e.PID != 0 {
		fmt.Fprintf(&b, " [pid %d]", e.PID)
	}
	return b.String()
}

// GRPCStatus is e as a gRPC status whose details hold e.Proto(), so that
// status.Code and status.FromError see e's code wherever e is returned.
func (e *Error) GRPCStatus() *status.Status {
	code := e.Kind.Code()
	if e.code != codes.OK {
		code = e.code
	}
	st := status.New(code, e.Error())
	if withDetails, err := st.WithDetails(e.Proto()); err == nil {
		st = withDetails
	}
	return st
}

// Is makes errors.Is(err, ErrX) hold for the sentinel of e's kind, and
// errors.Is(err, context.DeadlineExceeded) for a timeout. A lock timeout
// is a timeout too (it matches ErrTimeout and context.DeadlineExceeded).
func (e *Error) Is(target error) bool {
	if s, ok := sentinels[e.Kind]; ok && s == target {
		return true
	}
	if e.Kind == KindLockTimeout && target == ErrTimeout {
		return true
	}
	return (e.Kind == KindTimeout || e.Kind == KindLockTimeout) && target == context.DeadlineExceeded
}

// Proto is e as a goray.v1.ErrorInfo.
func (e *Error) Proto() *pb.ErrorInfo {
	return &pb.ErrorInfo{
		Kind:        pb.ErrorKind(e.Kind),
		Message:     e.Message,
		Name:        e.Name,
		RemoteStack: e.RemoteStack,
		Cause:       e.Cause,
		NodeId:      e.NodeID,
		WorkerId:    e.WorkerID,
		Pid:         e.PID,
		Revision:    e.Revision,
	}
}

// FromProto turns a goray.v1.ErrorInfo back into an *Error.
func FromProto(p *pb.ErrorInfo) *Error {
	if p == nil {
		return nil
	}
	return &Error{
		Kind:        Kind(p.GetKind()),
		Message:     p.GetMessage(),
		Name:        p.GetName(),
		RemoteStack: p.GetRemoteStack(),
		Cause:       p.GetCause(),
		NodeID:      p.GetNodeId(),
		WorkerID:    p.GetWorkerId(),
		PID:         p.GetPid(),
		Revision:    p.GetRevision(),
	}
}

// ToProto turns any error into a goray.v1.ErrorInfo: an *Error keeps its kind,
// context errors become timeouts, anything else a task failure.
func ToProto(err error) *pb.ErrorInfo {
	var e *Error
	switch {
	case errors.As(err, &e):
		return e.Proto()
	case errors.Is(err, context.DeadlineExceeded):
		return &pb.ErrorInfo{Kind: pb.ErrorKind_ERROR_KIND_TIMEOUT, Message: err.Error()}
	default:
		return &pb.ErrorInfo{Kind: pb.ErrorKind_ERROR_KIND_TASK_FAILED, Message: err.Error()}
	}
}

// Status turns err into a gRPC status error carrying an ErrorInfo detail, for
// a server to return. Errors that already are gRPC statuses pass unchanged.
func Status(err error) error {
	if err == nil {
		return nil
	}
	var e *Error
	if !errors.As(err, &e) {
		if _, ok := status.FromError(err); ok {
			return err
		}
		if errors.Is(err, context.Canceled) {
			return status.Error(codes.Canceled, err.Error())
		}
		e = FromProto(ToProto(err))
	}
	return e.GRPCStatus().Err()
}

// FromStatus turns an error returned by a gRPC call into an *Error: the one
// the server sent, or, for a status that carries none (the transport's own,
// a missing token, a server that is not goray's), an *Error of the kind its
// code fits, which keeps that code (status.Code still sees it). A cancelled
// call becomes an error that errors.Is context.Canceled. Errors that are not
// statuses, and those that already hold an *Error, pass unchanged.
func FromStatus(err error) error {
	if err == nil || errors.As(err, new(*Error)) {
		return err
	}
	st, ok := status.FromError(err)
	if !ok {
		return err
	}
	for _, d := range st.Details() {
		if info, ok := d.(*pb.ErrorInfo); ok {
			return FromProto(info)
		}
	}
	switch st.Code() {
	case codes.OK:
		return err
	case codes.Canceled:
		return fmt.Errorf("%s: %w", st.Message(), context.Canceled)
	}
	k, ok := kindsByCode[st.Code()]
	if !ok {
		k = KindInternal // Unknown, Internal, DataLoss
	}
	return &Error{Kind: k, Message: st.Message(), code: st.Code()}
}

// Context is a context's error as goray reports it: a passed deadline
// becomes a KindTimeout *Error, which matches both ErrTimeout and
// context.DeadlineExceeded; any other error (context.Canceled) is returned
// unchanged. what names the call that waited, e.g. "get object 01ab…".
func Context(err error, what string) error {
	if err == nil || errors.Is(err, ErrTimeout) || !errors.Is(err, context.DeadlineExceeded) {
		return err
	}
	return New(KindTimeout, "", "%s: the context's deadline passed before it finished (%v)", what, err)
}
