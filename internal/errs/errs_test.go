package errs

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"

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
	if got := FromStatus(plain); got != plain {
		t.Fatalf("a status without details comes back unchanged: got %v", got)
	}
	e := FromStatus(Status(errors.New("user error")))
	if !errors.Is(e, ErrTaskFailed) {
		t.Fatalf("a plain error: got %v, want a task failure", e)
	}
	msg := (&Error{Kind: KindTaskFailed, Name: "f", Message: "m", RemoteStack: "stack"}).Error()
	for _, want := range []string{"task failed", "(f)", ": m", "remote stack:\nstack"} {
		if !strings.Contains(msg, want) {
			t.Fatalf("message %q lacks %q", msg, want)
		}
	}
}
