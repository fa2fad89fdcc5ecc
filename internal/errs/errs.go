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
)

// Sentinels: errors.Is(err, ErrX) holds for every *Error of that kind.
var (
	ErrTaskFailed      = errors.New("task failed")
	ErrActorDied       = errors.New("actor died")
	ErrObjectLost      = errors.New("object lost")
	ErrOwnerDied       = errors.New("owner died")
	ErrWorkerCrashed   = errors.New("worker crashed")
	ErrNodeDied        = errors.New("node died")
	ErrInfeasible      = errors.New("infeasible")
	ErrTimeout         = errors.New("timeout")
	ErrNotFound        = errors.New("not found")
	ErrInvalidArgument = errors.New("invalid argument")
)

var sentinels = map[Kind]error{
	KindTaskFailed:      ErrTaskFailed,
	KindActorDied:       ErrActorDied,
	KindObjectLost:      ErrObjectLost,
	KindOwnerDied:       ErrOwnerDied,
	KindWorkerCrashed:   ErrWorkerCrashed,
	KindNodeDied:        ErrNodeDied,
	KindInfeasible:      ErrInfeasible,
	KindTimeout:         ErrTimeout,
	KindNotFound:        ErrNotFound,
	KindInvalidArgument: ErrInvalidArgument,
}

var codesByKind = map[Kind]codes.Code{
	KindTaskFailed:      codes.Aborted,
	KindActorDied:       codes.Unavailable,
	KindObjectLost:      codes.DataLoss,
	KindOwnerDied:       codes.Unavailable,
	KindWorkerCrashed:   codes.Unavailable,
	KindNodeDied:        codes.Unavailable,
	KindInfeasible:      codes.FailedPrecondition,
	KindTimeout:         codes.DeadlineExceeded,
	KindNotFound:        codes.NotFound,
	KindInvalidArgument: codes.InvalidArgument,
}

// Error is a goray error of one Kind.
type Error struct {
	Kind Kind
	// Message says what went wrong, in words for the user.
	Message string
	// Name is the registered function, actor type or method involved, if any.
	Name string
	// RemoteStack is the stack of the goroutine that failed in user code.
	RemoteStack string
	// Cause is further detail, e.g. how a process exited.
	Cause    string
	NodeID   []byte
	WorkerID []byte
	PID      int32
}

// New makes an *Error of kind k.
func New(k Kind, name, format string, args ...any) *Error {
	return &Error{Kind: k, Name: name, Message: fmt.Sprintf(format, args...)}
}

func (e *Error) Error() string {
	var b strings.Builder
	if s, ok := sentinels[e.Kind]; ok {
		b.WriteString(s.Error())
	} else {
		b.WriteString("goray error")
	}
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
	if e.RemoteStack != "" {
		b.WriteString("\n\nremote stack:\n")
		b.WriteString(strings.TrimRight(e.RemoteStack, "\n"))
	}
	return b.String()
}

// Is makes errors.Is(err, ErrX) hold for the sentinel of e's kind, and
// errors.Is(err, context.DeadlineExceeded) for a timeout.
func (e *Error) Is(target error) bool {
	if s, ok := sentinels[e.Kind]; ok && s == target {
		return true
	}
	return e.Kind == KindTimeout && target == context.DeadlineExceeded
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
	code, ok := codesByKind[e.Kind]
	if !ok {
		code = codes.Unknown
	}
	st := status.New(code, e.Error())
	if withDetails, derr := st.WithDetails(e.Proto()); derr == nil {
		st = withDetails
	}
	return st.Err()
}

// FromStatus turns an error returned by a gRPC call back into an *Error when
// the server sent one; otherwise it returns err unchanged.
func FromStatus(err error) error {
	if err == nil {
		return nil
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
	return err
}
