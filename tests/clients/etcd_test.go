package clients

import (
	"bufio"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// etcdCreds are what the head wrote beside its token file: etcdctl's
// environment (ETCDCTL_ENDPOINTS, ETCDCTL_USER=user:password).
func etcdCreds(t *testing.T, path string) (endpoints, user, password string) {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatalf("the head's etcd credentials: %v", err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		k, v, _ := strings.Cut(sc.Text(), "=")
		switch k {
		case "ETCDCTL_ENDPOINTS":
			endpoints = v
		case "ETCDCTL_USER":
			user, password, _ = strings.Cut(v, ":")
		}
	}
	if endpoints == "" || user == "" {
		t.Fatalf("%s: no ETCDCTL_ENDPOINTS or ETCDCTL_USER", path)
	}
	return endpoints, user, password
}

// etcdSuites runs standard etcd clients against the head's coordination
// service with the cluster's credentials: etcdctl, python3-etcd3 and npm
// etcd3 put, get, watch and lock; wrong credentials are an authentication
// error; the read-only user cannot write.
func etcdSuites(t *testing.T, root, tokenFile string) {
	eps, user, pass := etcdCreds(t, tokenFile+".etcd")
	_, roUser, roPass := etcdCreds(t, tokenFile+".etcd-ro")
	env := append(os.Environ(),
		"GORAY_TEST_ETCD_ENDPOINTS="+eps,
		"GORAY_TEST_ETCD_USER="+user, "GORAY_TEST_ETCD_PASSWORD="+pass,
		"GORAY_TEST_ETCD_RO_USER="+roUser, "GORAY_TEST_ETCD_RO_PASSWORD="+roPass,
	)
	t.Run("etcdctl", func(t *testing.T) {
		if _, err := exec.LookPath("etcdctl"); err != nil {
			missing(t, "etcdctl (apt-get install etcd-client)")
		}
		ctl := func(u, p string, args ...string) (string, error) {
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			cmd := exec.CommandContext(ctx, "etcdctl", append([]string{"--dial-timeout=5s", "--command-timeout=5s"}, args...)...)
			cmd.Env = append(os.Environ(), "ETCDCTL_ENDPOINTS="+eps, "ETCDCTL_USER="+u+":"+p)
			out, err := cmd.CombinedOutput()
			return string(out), err
		}
		if out, err := ctl(user, pass, "put", "/ctl/k", "v1"); err != nil || strings.TrimSpace(out) != "OK" {
			t.Fatalf("etcdctl put: %q, %v", out, err)
		}
		if out, err := ctl(user, pass, "get", "/ctl/k", "--print-value-only"); err != nil || strings.TrimSpace(out) != "v1" {
			t.Fatalf("etcdctl get: got %q, %v; want v1", out, err)
		}
		// A watch from the next revision sees the put that follows.
		w := exec.Command("etcdctl", "watch", "/ctl/w")
		w.Env = append(os.Environ(), "ETCDCTL_ENDPOINTS="+eps, "ETCDCTL_USER="+user+":"+pass)
		w.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
		stdout, err := w.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		if err := w.Start(); err != nil {
			t.Fatal(err)
		}
		defer func() { syscall.Kill(-w.Process.Pid, syscall.SIGKILL); w.Wait() }()
		lines := make(chan string, 16)
		go func() {
			sc := bufio.NewScanner(stdout)
			for sc.Scan() {
				lines <- sc.Text()
			}
			close(lines)
		}()
		deadline := time.After(20 * time.Second)
	watch:
		for {
			// etcdctl watch prints nothing until a change: keep writing
			// until the watcher (connecting concurrently) reports one.
			if out, err := ctl(user, pass, "put", "/ctl/w", "changed"); err != nil {
				t.Fatalf("etcdctl put: %q, %v", out, err)
			}
			select {
			case l := <-lines:
				if l == "PUT" {
					break watch
				}
			case <-time.After(200 * time.Millisecond):
			case <-deadline:
				t.Fatal("etcdctl watch printed no PUT")
			}
		}
		if out, err := ctl(user, pass, "lock", "/ctl/lock", "echo", "held"); err != nil || strings.TrimSpace(out) != "held" {
			t.Fatalf("etcdctl lock: got %q, %v; want held", out, err)
		}
		if out, err := ctl(user, "wrong", "get", "/ctl/k"); err == nil || !strings.Contains(out, "authentication failed") {
			t.Fatalf("etcdctl with a wrong password: got %q, %v; want an authentication error", out, err)
		}
		if out, err := ctl(roUser, roPass, "get", "/ctl/k", "--print-value-only"); err != nil || strings.TrimSpace(out) != "v1" {
			t.Fatalf("etcdctl get as the read-only user: %q, %v", out, err)
		}
		if out, err := ctl(roUser, roPass, "put", "/ctl/k", "v2"); err == nil || !strings.Contains(out, "permission denied") {
			t.Fatalf("etcdctl put as the read-only user: got %q, %v; want permission denied", out, err)
		}
	})
	t.Run("python etcd3", func(t *testing.T) {
		py := "/usr/bin/python3"
		if err := exec.Command(py, "-c", "import etcd3").Run(); err != nil {
			missing(t, "python3-etcd3 (apt-get install python3-etcd3)")
		}
		runSuite(t, root, env, py, "-m", "unittest", "discover", "-s", "tests/clients/etcd-python", "-v")
	})
	t.Run("node etcd3", func(t *testing.T) {
		dir := filepath.Join(root, "tests/clients/etcd-node")
		if _, err := exec.LookPath("node"); err != nil {
			missing(t, "node")
		}
		if _, err := os.Stat(filepath.Join(dir, "node_modules/etcd3")); err != nil {
			missing(t, "tests/clients/etcd-node/node_modules (run `npm ci` there)")
		}
		runSuite(t, dir, env, "node", "--test", "etcd.test.js")
	})
}
