package raylet

import (
	"testing"

	"go.uber.org/goleak"
)

// TestMain fails the package when a test leaves a goroutine behind: every
// goroutine a raylet (or the head the tests start beside it) starts must be
// stopped and waited for by Stop.
func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }
