package store

import (
	"fmt"
	"os"
	"testing"

	"go.uber.org/goleak"
)

// TestMain fails the package when a test leaves a goroutine behind: what a
// test starts must be stopped and waited for before it ends. Run with
// envReaperHolder set, the test binary is TestReaperOutlivesSIGKILL's
// holder process instead.
func TestMain(m *testing.M) {
	if dir := os.Getenv(envReaperHolder); dir != "" {
		os.Exit(holdReaper(dir))
	}
	goleak.VerifyTestMain(m)
}

// envReaperHolder names the directory a holder process starts a reaper for.
const envReaperHolder = "STORE_TEST_REAPER_HOLDER"

// holdReaper starts a reaper for dir, prints its pid and waits until its
// standard input closes (the test SIGKILLs it before then).
func holdReaper(dir string) int {
	r, err := StartReaper(dir)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	fmt.Printf("reaper %d\n", r.Pid())
	_, _ = os.Stdin.Read(make([]byte, 1))
	return 0
}
