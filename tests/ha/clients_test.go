package ha

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/goray/goray/internal/testcluster"
)

// The client scripts: connect to every head (the leader listed first), list
// the files (a head call, through the gateway), print CONNECTED, wait for a
// line on stdin (the test kills the leader meanwhile), then list the files
// again until it works (within 30 s) and print FOLLOWED.
const pyClient = `
import sys, time
sys.path.insert(0, sys.argv[1])
import goray
c = goray.connect(sys.argv[2], token=sys.argv[3], timeout=10)
c.list_files()
print("CONNECTED", flush=True)
sys.stdin.readline()
deadline = time.time() + 30
while True:
    try:
        c.list_files()
        break
    except Exception as e:
        if time.time() > deadline:
            raise
        time.sleep(0.2)
print("FOLLOWED", flush=True)
c.close()
`

const nodeClient = `
const goray = require(process.argv[1]);
(async () => {
  const c = await goray.connect(process.argv[2], { token: process.argv[3], timeout: 10 });
  await c.listFiles();
  console.log('CONNECTED');
  await new Promise((resolve) => process.stdin.once('data', resolve));
  const deadline = Date.now() + 30000;
  for (;;) {
    try { await c.listFiles(); break; } catch (e) {
      if (Date.now() > deadline) throw e;
      await new Promise((r) => setTimeout(r, 200));
    }
  }
  console.log('FOLLOWED');
  c.close();
  process.exit(0);
})().catch((e) => { console.error(e); process.exit(1); });
`

// TestClientsFollowTheHeads: the Python and Node clients given every head's
// address keep working when the head they talk to (the leader) is killed.
func TestClientsFollowTheHeads(t *testing.T) {
	out, err := exec.Command("go", "env", "GOMOD").Output()
	if err != nil {
		t.Fatal(err)
	}
	root := filepath.Dir(strings.TrimSpace(string(out)))
	py := "/usr/bin/python3"
	if err := exec.Command(py, "-c", "import grpc, google.protobuf, msgpack").Run(); err != nil {
		t.Fatalf("python3 with grpcio, protobuf and msgpack is needed (apt-get install python3-grpcio python3-protobuf python3-msgpack; .ci/run installs them): %v", err)
	}
	if _, err := os.Stat(filepath.Join(root, "clients", "node", "node_modules")); err != nil {
		t.Fatalf("the Node client's packages are needed (npm ci in clients/node; .ci/run does it): %v", err)
	}
	c := startCluster(t, 0)
	l := c.waitLeader(nil)
	addrs := []string{l.addr}
	for _, h := range c.heads {
		if h != l {
			addrs = append(addrs, h.addr)
		}
	}
	list := strings.Join(addrs, ",")
	clients := []*testcluster.Proc{
		testcluster.StartProc(t, "python client", py, []string{"-c", pyClient, filepath.Join(root, "clients", "python"), list, c.token}, nil, true),
		testcluster.StartProc(t, "node client", "node", []string{"-e", nodeClient, filepath.Join(root, "clients", "node"), list, c.token}, nil, true),
	}
	for _, p := range clients {
		p.WaitLine(t, 60*time.Second, "CONNECTED", func(s string) bool { return s == "CONNECTED" })
	}
	l.proc.Signal(t, syscall.SIGKILL)
	l.proc.Wait(t, 10*time.Second)
	c.waitLeader(l)
	for _, p := range clients {
		fmt.Fprintln(p.Stdin)
		p.WaitLine(t, 60*time.Second, "FOLLOWED", func(s string) bool { return s == "FOLLOWED" })
		if err := p.Wait(t, 10*time.Second); err != nil {
			t.Errorf("%s: %v\n%s", p.Name(), err, testcluster.Tail(p.Stderr.String()))
		}
	}
}
