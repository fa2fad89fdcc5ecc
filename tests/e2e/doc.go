// Package e2e is goray's multi-process test tier: it builds the real `raylet`
// binary and a driver program (testdata/driver), starts heads and joined
// raylets as separate processes on loopback, runs drivers against them and
// checks end-to-end behaviour: placement by custom resources, refs passed
// between nodes, large objects pulled across nodes, authentication, and that
// no process (raylet, driver or worker) outlives the test.
//
// The process helpers (raylets and drivers as process groups that are always
// stopped, the leak scan over /proc) live in internal/testcluster, whose
// Processes runner is this tier's cluster; cluster_test.go adds the driver
// and the worker scans. TestNodeDeath runs testcluster.NodeDeath, the body
// tests/cluster runs in-process, with the test process as the driver.
// The tests need Linux (/proc) and are run in CI with
//
//	go test -race ./tests/e2e/
package e2e
