package task_test

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/goray/goray/objectstore"
	"github.com/goray/goray/runtime"
	"github.com/goray/goray/task"
)

// crashOnce kills its worker process the first time it sees no marker.
func crashOnce(_ context.Context, marker string) (string, error) {
	if _, err := os.Stat(marker); err != nil {
		if err := os.WriteFile(marker, nil, 0o600); err != nil {
			return "", err
		}
		os.Exit(9)
	}
	return "ran", nil
}

// failOnce returns an error the first time it sees no marker.
func failOnce(_ context.Context, marker string) (string, error) {
	if _, err := os.Stat(marker); err != nil {
		if err := os.WriteFile(marker, nil, 0o600); err != nil {
			return "", err
		}
		return "", errors.New("transient failure")
	}
	return "ran", nil
}

var (
	crashOnceTask = task.Register1("tasktest.crash_once", crashOnce)
	failOnceTask  = task.Register1("tasktest.fail_once", failOnce)
)

func TestRetries(t *testing.T) {
	tests := []struct {
		name    string
		fn      task.Func1[string, string]
		opts    []task.Option
		wantErr error
	}{
		{"worker death is retried by default", crashOnceTask, nil, nil},
		{"no retries: worker crashed", crashOnceTask, []task.Option{task.WithMaxRetries(0)}, runtime.ErrWorkerCrashed},
		{"application errors are not retried by default", failOnceTask, nil, runtime.ErrTaskFailed},
		{"application errors retried when asked", failOnceTask, []task.Option{task.WithRetryExceptions()}, nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			ctx := testCtx(t, 60*time.Second)
			marker := filepath.Join(t.TempDir(), "marker")
			got, err := tc.fn.Remote(ctx, objectstore.Val(marker), tc.opts...).Get(ctx)
			if tc.wantErr != nil {
				if !errors.Is(err, tc.wantErr) {
					t.Fatalf("got %q, %v; want %v", got, err, tc.wantErr)
				}
				return
			}
			if err != nil || got != "ran" {
				t.Fatalf("got %q, %v; want ran", got, err)
			}
		})
	}
}
