// Package e2e is goray's multi-process test tier: it builds the real `raylet`
// binary and a driver program (testdata/driver), starts heads and joined
// raylets as separate processes on loopback, runs drivers against them and
// checks end-to-end behaviour: placement by custom resources, refs passed
// between nodes, large objects pulled across nodes, authentication, and that
// no process (raylet, driver or worker) outlives the test.
//
// The helpers in cluster_test.go (startHead, join, startDriver, leak and
// worker scans over /proc) are meant for reuse by further tests of this tier.
// The tests need Linux (/proc) and are run in CI with
//
//	go test -race ./tests/e2e/
package e2e
