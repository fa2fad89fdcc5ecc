package e2e

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/goray/goray/internal/store"
	"github.com/goray/goray/internal/testcluster"
	"github.com/goray/goray/internal/testwait"
)

// reapTimeout bounds the wait for a killed raylet's directories to go (it
// turns a hang into a failure; nothing asserts a speed).
const reapTimeout = 15 * time.Second

// readyLog matches the raylet's "raylet ready" log line, which names its
// store and data directories.
var readyLog = regexp.MustCompile(`msg="raylet ready".* store_dir=(\S+) data_dir=(\S+)`)

// startOwnDirsRaylet starts a raylet with no --data-dir (so it makes and
// owns its data dir and its store dir) and returns it with its dirs.
func startOwnDirsRaylet(t *testing.T, c *cluster, name string, args ...string) (p *proc, storeDir, dataDir string) {
	t.Helper()
	args = append(args, "--listen", "127.0.0.1:0", "--token-file", c.TokenFile, "--log-level", "info")
	p = testcluster.StartProc(t, "raylet "+name, bins.raylet, args, nil, false)
	p.WaitLine(t, testcluster.ReadyTimeout, "ready line", testcluster.RayletReadyLine.MatchString)
	var m []string
	testwait.Eventually(t, testcluster.ReadyTimeout, "raylet ready log line with its directories", func() bool {
		m = readyLog.FindStringSubmatch(p.Stderr.String())
		return m != nil
	})
	return p, m[1], m[2]
}

func isGone(path string) bool {
	_, err := os.Stat(path)
	return os.IsNotExist(err)
}

// TestKilledRayletLeavesNoDirs: a raylet (a joined node, and a head with its
// node) that is SIGKILLed — process group and all — leaves neither its store
// directory (with its arena) nor its data directory behind, with no other
// raylet starting to sweep them; its reaper exits after removing them.
func TestKilledRayletLeavesNoDirs(t *testing.T) {
	for _, tc := range []struct {
		name string
		args func(c *cluster) []string
	}{
		{"joined", func(c *cluster) []string {
			c.StartHead(`{"CPU":1}`)
			return []string{"--address", c.Head.Addr, "--resources", `{"CPU":1}`}
		}},
		{"head", func(*cluster) []string { return []string{"--head", "--resources", `{"CPU":1}`} }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := newCluster(t)
			p, storeDir, dataDir := startOwnDirsRaylet(t, c, tc.name, tc.args(c)...)
			if !strings.HasPrefix(storeDir, store.BaseDir(dataDir)) {
				t.Fatalf("store dir %s: want it under %s", storeDir, store.BaseDir(dataDir))
			}
			for _, d := range []string{storeDir, dataDir, store.ArenaPath(storeDir)} {
				if isGone(d) {
					t.Fatalf("%s while the raylet runs: got missing, want present", d)
				}
			}
			headDirs := ownedBy(filepath.Join(filepath.Dir(dataDir), "head-*"), p.Pid())
			if want := map[bool]int{true: 1}[tc.name == "head"]; len(headDirs) != want {
				t.Fatalf("head data dirs owned by the raylet: got %v, want %d", headDirs, want)
			}
			reapers := testcluster.Mentioning(storeDir)
			if len(reapers) != 1 {
				t.Fatalf("processes naming the store dir while the raylet runs: got %d:\n%s\nwant its one reaper", len(reapers), testcluster.FmtProcs(reapers))
			}
			p.Kill(t) // SIGKILL to the raylet's process group
			testwait.Eventually(t, reapTimeout, "store and data dirs removed after SIGKILL", func() bool {
				return isGone(storeDir) && isGone(dataDir) && !slices.ContainsFunc(headDirs, func(d string) bool { return !isGone(d) })
			})
			testwait.Eventually(t, reapTimeout, "reaper exit", func() bool { return len(testcluster.Mentioning(storeDir)) == 0 })
		})
	}
}

// TestHeadOnlyMapsNoArena: `raylet --head --no-node` makes no object store:
// no store directory is claimed by its process and it maps no arena.
func TestHeadOnlyMapsNoArena(t *testing.T) {
	c := newCluster(t)
	h := c.StartHeadOnly("127.0.0.1:0")
	if maps, err := os.ReadFile(fmt.Sprintf("/proc/%d/maps", h.Pid())); err != nil {
		t.Fatal(err)
	} else if bytes.Contains(maps, []byte("/"+store.ArenaName)) {
		t.Fatalf("head-only process maps: got an arena mapping, want none:\n%s", maps)
	}
	if dirs := ownedBy(filepath.Join(store.BaseDir(os.TempDir()), "store-*"), h.Pid()); len(dirs) != 0 {
		t.Fatalf("store dirs of the head-only process (pid %d): got %v, want none", h.Pid(), dirs)
	}
	if n := len(testcluster.ScanProcs(func(pid int, cmdline []string) bool {
		return len(cmdline) > 2 && cmdline[0] == "/bin/sh" && strings.Contains(strings.Join(cmdline, " "), "goray-reaper") && parentOf(pid) == h.Pid()
	})); n != 0 {
		t.Fatalf("reapers started by the head-only process: got %d, want 0 (it owns no node directories)", n)
	}
	h.Signal(t, syscall.SIGTERM)
	if err := h.Wait(t, rayletExit); err != nil {
		t.Fatalf("head-only process after SIGTERM: got %v, want exit status 0", err)
	}
}

// ownedBy lists the directories matching pattern that process pid claimed
// (store.Claim).
func ownedBy(pattern string, pid int) []string {
	dirs, _ := filepath.Glob(pattern)
	var out []string
	for _, d := range dirs {
		if b, err := os.ReadFile(filepath.Join(d, ".goray-owner")); err == nil && strings.HasPrefix(string(b), fmt.Sprintf("%d ", pid)) {
			out = append(out, d)
		}
	}
	return out
}

// parentOf is process pid's parent pid, 0 when unknown.
func parentOf(pid int) int {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	i := bytes.LastIndexByte(b, ')')
	var state byte
	var ppid int
	if i < 0 {
		return 0
	}
	if _, err := fmt.Sscanf(string(b[i+1:]), " %c %d", &state, &ppid); err != nil {
		return 0
	}
	return ppid
}
