// Package goraytest lets you test your own actors and tasks against a real,
// embedded goray cluster, as Temporal's testsuite lets you test workflows:
// no cluster to start, nothing to deploy.
//
// Make goraytest.Main your package's TestMain. It starts a head and a node
// inside the test process (what runtime.Init does with no address), runs
// your tests, and stops the cluster. The raylet runs your actors and tasks in
// worker processes started from the test binary itself, which is why Main
// must be the TestMain: when the test binary is started as a worker, Main
// serves instead of running the tests. Register your actor types and task
// functions at package level (actor.Register, task.Register), so that the
// worker processes have them too.
//
//	func TestMain(m *testing.M) { goraytest.Main(m) }
//
//	func TestCounter(t *testing.T) {
//		ctx := goraytest.Context(t, 30*time.Second)
//		h := goraytest.Spawn(t, counterType)
//		n, err := counterAdd.Remote(ctx, h, objectstore.Val(2)).Get(ctx)
//		...
//	}
//
// Spawn kills the actor when the test ends, Context bounds a test so that a
// hang fails it, and Eventually waits for a condition (never sleep to wait).
// Main takes runtime options, for example runtime.WithResources to give the
// embedded node custom resources your actors ask for.
package goraytest
