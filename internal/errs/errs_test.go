package errs

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"

	pb "github.com/goray/goray/proto/goray/v1"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

func TestStatusRoundTrip(t *testing.T) {
	for kind, sentinel := range sentinels {
		t.Run(sentinel.Error(), func(t *testing.T) {
			in := &Error{Kind: kind, Name: "counter.add", Message: "boom", RemoteStack: "goroutine 1", PID: 7}
			wire := Status(fmt.Errorf("wrapped: %w", in))
			if got, want := status.Code(wire), codesByKind[kind]; got != want {
				t.Fatalf("code: got %v, want %v", got, want)
			}
			back := FromStatus(wire)
			if !errors.Is(back, sentinel) {
				t.Fatalf("errors.Is(%v, %v): got false, want true", back, sentinel)
			}
			var e *Error
			if !errors.As(back, &e) || e.RemoteStack != "goroutine 1" || e.Name != "counter.add" || e.PID != 7 {
				t.Fatalf("got %#v, want the fields preserved", e)
			}
		})
	}
}

func TestTimeoutIsDeadlineExceeded(t *testing.T) {
	err := New(KindTimeout, "", "too slow")
	if !errors.Is(err, context.DeadlineExceeded) || !errors.Is(err, ErrTimeout) {
		t.Fatalf("got %v, want it to match both context.DeadlineExceeded and ErrTimeout", err)
	}
	if errors.Is(New(KindTaskFailed, "", "x"), context.DeadlineExceeded) {
		t.Fatal("a task failure matched context.DeadlineExceeded")
	}
}

func TestPlainErrors(t *testing.T) {
	if got := status.Code(Status(context.Canceled)); got != codes.Canceled {
		t.Fatalf("canceled: got %v, want Canceled", got)
	}
	plain := status.Error(codes.Unauthenticated, "no token")
	if got := Status(plain); got != plain {
		t.Fatalf("a status passes unchanged: got %v, want %v", got, plain)
	}
	e := FromStatus(Status(errors.New("user error")))
	if !errors.Is(e, ErrTaskFailed) {
		t.Fatalf("a plain error: got %v, want a task failure", e)
	}
	e2 := &Error{Kind: KindTaskFailed, Name: "f", Message: "m", RemoteStack: "goroutine 1 [running]:\nmain.f()\n\tf.go:3"}
	msg := e2.Error()
	for _, want := range []string{"task failed", "(f)", ": m"} {
		if !strings.Contains(msg, want) {
			t.Fatalf("message %q lacks %q", msg, want)
		}
	}
	// The stack is in RemoteStack only; Error() is one line.
	if strings.Contains(msg, "\n") || strings.Contains(msg, "goroutine 1") {
		t.Fatalf("Error(): got %q, want one line without the remote stack", msg)
	}
	if !strings.Contains(e2.RemoteStack, "main.f()") {
		t.Fatalf("RemoteStack: got %q, want the stack", e2.RemoteStack)
	}
}

func TestKinds(t *testing.T) {
	for _, tc := range []struct {
		kind     Kind
		sentinel error
		str      string
		code     codes.Code
	}{
		{KindTaskFailed, ErrTaskFailed, "task failed", codes.Aborted},
		{KindActorDied, ErrActorDied, "actor died", codes.Unavailable},
		{KindObjectLost, ErrObjectLost, "object lost", codes.DataLoss},
		{KindOwnerDied, ErrOwnerDied, "owner died", codes.Unavailable},
		{KindWorkerCrashed, ErrWorkerCrashed, "worker crashed", codes.Unavailable},
		{KindNodeDied, ErrNodeDied, "node died", codes.Unavailable},
		{KindInfeasible, ErrInfeasible, "infeasible", codes.FailedPrecondition},
		{KindTimeout, ErrTimeout, "timeout", codes.DeadlineExceeded},
		{KindCompacted, ErrCompacted, "revision compacted", codes.OutOfRange},
		{KindLockTimeout, ErrLockTimeout, "lock timeout", codes.DeadlineExceeded},
		{KindSessionLost, ErrSessionLost, "session lost", codes.FailedPrecondition},
		{KindNotFound, ErrNotFound, "not found", codes.NotFound},
		{KindInvalidArgument, ErrInvalidArgument, "invalid argument", codes.InvalidArgument},
		{KindAlreadyExists, ErrAlreadyExists, "already exists", codes.AlreadyExists},
		{KindShuttingDown, ErrShuttingDown, "shutting down", codes.Unavailable},
		{KindJobFinished, ErrJobFinished, "job finished", codes.FailedPrecondition},
		{KindUnavailable, ErrUnavailable, "unavailable", codes.Unavailable},
		{KindUnauthenticated, ErrUnauthenticated, "unauthenticated", codes.Unauthenticated},
		{KindPermissionDenied, ErrPermissionDenied, "permission denied", codes.PermissionDenied},
		{KindInternal, ErrInternal, "internal error", codes.Internal},
	} {
		t.Run(tc.str, func(t *testing.T) {
			if got := tc.kind.String(); got != tc.str {
				t.Errorf("String: got %q, want %q", got, tc.str)
			}
			if got := fmt.Sprint(tc.kind); got != tc.str {
				t.Errorf("fmt.Sprint: got %q, want %q", got, tc.str)
			}
			if got := pb.ErrorKind(tc.kind).String(); got == "" || strings.HasPrefix(got, "ErrorKind(") {
				t.Errorf("kind %d is not a goray.v1.ErrorKind value (got %q)", int32(tc.kind), got)
			}
			e := New(tc.kind, "n", "what went wrong")
			if got := e.Error(); got != tc.str+" (n): what went wrong" {
				t.Errorf("Error: got %q, want %q", got, tc.str+" (n): what went wrong")
			}
			wrapped := fmt.Errorf("call: %w", e)
			if !errors.Is(wrapped, tc.sentinel) {
				t.Errorf("errors.Is(%v, %v): got false, want true", wrapped, tc.sentinel)
			}
			var as *Error
			if !errors.As(wrapped, &as) || as != e {
				t.Errorf("errors.As: got %v, want the *Error", as)
			}
			for _, other := range sentinels {
				if other == ErrTimeout && tc.kind == KindLockTimeout {
					if !errors.Is(e, other) {
						t.Errorf("errors.Is(%v, ErrTimeout): got false, want true (a lock timeout is a timeout)", e)
					}
					continue
				}
				if other != tc.sentinel && errors.Is(e, other) {
					t.Errorf("errors.Is(%v, %v): got true, want false", e, other)
				}
			}
			if got := status.Code(wrapped); got != tc.code {
				t.Errorf("status.Code: got %v, want %v", got, tc.code)
			}
			back := FromStatus(Status(wrapped))
			if !errors.As(back, &as) || as.Kind != tc.kind || as.Message != "what went wrong" || as.Name != "n" {
				t.Errorf("round trip through a status: got %#v, want kind %v, the message and name", back, tc.kind)
			}
			// What a client gets from a server that returned e as it is.
			back = FromStatus(status.Convert(e).Err())
			if !errors.Is(back, tc.sentinel) {
				t.Errorf("through GRPCStatus: got %v, want errors.Is(err, %v)", back, tc.sentinel)
			}
		})
	}
	if got := Kind(99).String(); got != "error kind 99" {
		t.Errorf("unknown kind: got %q, want %q", got, "error kind 99")
	}
}

// TestFromStatusWithoutDetails: a status that carries no goray error (the
// transport's, a missing token) reaches an SDK caller as an *Error of the
// kind its code fits, never as a raw gRPC code, and keeps that code.
func TestFromStatusWithoutDetails(t *testing.T) {
	for _, tc := range []struct {
		code     codes.Code
		sentinel error
	}{
		{codes.Unavailable, ErrUnavailable},
		{codes.Unauthenticated, ErrUnauthenticated},
		{codes.PermissionDenied, ErrPermissionDenied},
		{codes.DeadlineExceeded, ErrTimeout},
		{codes.NotFound, ErrNotFound},
		{codes.Unimplemented, ErrNotFound},
		{codes.InvalidArgument, ErrInvalidArgument},
		{codes.ResourceExhausted, ErrInvalidArgument},
		{codes.AlreadyExists, ErrAlreadyExists},
		{codes.Internal, ErrInternal},
		{codes.Unknown, ErrInternal},
		{codes.DataLoss, ErrInternal},
	} {
		t.Run(tc.code.String(), func(t *testing.T) {
			got := FromStatus(status.Error(tc.code, "the server said so"))
			var e *Error
			if !errors.As(got, &e) || !errors.Is(got, tc.sentinel) {
				t.Fatalf("got %#v, want an *Error that errors.Is %v", got, tc.sentinel)
			}
			if c := status.Code(got); c != tc.code {
				t.Errorf("status.Code: got %v, want the original %v", c, tc.code)
			}
			if !strings.Contains(got.Error(), "the server said so") {
				t.Errorf("Error(): got %q, want the server's message in it", got.Error())
			}
		})
	}
	if got := FromStatus(status.Error(codes.Canceled, "stop")); !errors.Is(got, context.Canceled) {
		t.Errorf("a cancelled call: got %v, want errors.Is(err, context.Canceled)", got)
	}
	if got := FromStatus(nil); got != nil {
		t.Errorf("nil: got %v, want nil", got)
	}
}

func TestFromStatusKeepsGorayErrors(t *testing.T) {
	in := fmt.Errorf("get: %w", New(KindObjectLost, "", "gone"))
	if got := FromStatus(in); got != in {
		t.Fatalf("FromStatus of a wrapped *Error: got %v, want it unchanged", got)
	}
	if got := FromStatus(nil); got != nil {
		t.Fatalf("FromStatus(nil): got %v, want nil", got)
	}
}

func TestContext(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 0)
	defer cancel()
	<-ctx.Done()
	err := fmt.Errorf("get object: %w", Context(ctx.Err(), "get object 01"))
	if !errors.Is(err, context.DeadlineExceeded) || !errors.Is(err, ErrTimeout) {
		t.Fatalf("passed deadline: got %v, want both context.DeadlineExceeded and ErrTimeout", err)
	}
	if strings.Contains(err.Error(), "\n") {
		t.Fatalf("passed deadline: got %q, want one line", err)
	}
	if got := Context(context.Canceled, "x"); got != context.Canceled {
		t.Fatalf("cancelled: got %v, want context.Canceled unchanged", got)
	}
	if got := Context(nil, "x"); got != nil {
		t.Fatalf("nil: got %v, want nil", got)
	}
	timeout := New(KindTimeout, "", "slow")
	if got := Context(timeout, "x"); got != timeout {
		t.Fatalf("a timeout already: got %v, want it unchanged", got)
	}
}

func TestNotInitialized(t *testing.T) {
	if errors.Is(ErrNotInitialized, ErrTaskFailed) || errors.As(ErrNotInitialized, new(*Error)) {
		t.Fatal("ErrNotInitialized is a local error, not an *Error of a kind")
	}
	if !strings.Contains(ErrNotInitialized.Error(), "runtime.Init") {
		t.Fatalf("ErrNotInitialized: got %q, want it to say to call runtime.Init", ErrNotInitialized)
	}
}
