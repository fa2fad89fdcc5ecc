package core

import (
	"testing"

	"go.uber.org/goleak"
)

// TestMain fails the package when a test leaves a goroutine behind: what a
// test starts must be stopped and waited for before it ends.
func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }
