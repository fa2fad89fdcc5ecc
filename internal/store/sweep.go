package store

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// ownerFile names the process that owns a temporary directory.
const ownerFile = ".goray-owner"

// procStart is the start time of process pid (field 22 of /proc/pid/stat),
// which tells a live process from a later one that reused its pid.
func procStart(pid int) (string, bool) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return "", false
	}
	// The command name (field 2) may hold spaces: count fields after it.
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return "", false
	}
	fields := strings.Fields(string(b[i+1:]))
	if len(fields) < 20 {
		return "", false
	}
	return fields[19], true
}

// Claim marks dir as owned by this process, so that Sweep can remove it
// once this process is gone without having removed it (killed by SIGKILL).
func Claim(dir string) error {
	start, ok := procStart(os.Getpid())
	if !ok {
		return nil // no /proc: nothing to sweep by either
	}
	content := fmt.Sprintf("%d %s\n", os.Getpid(), start)
	if err := os.WriteFile(filepath.Join(dir, ownerFile), []byte(content), 0o600); err != nil {
		return fmt.Errorf("claim %s: %w", dir, err)
	}
	return nil
}

// Sweep removes the directories in base whose names start with prefix and
// whose owning process (Claim) is gone. Directories without an owner file,
// or whose owner lives, are left alone. It returns what it removed.
func Sweep(base, prefix string) []string {
	entries, err := os.ReadDir(base)
	if err != nil {
		return nil
	}
	var removed []string
	for _, e := range entries {
		if !e.IsDir() || !strings.HasPrefix(e.Name(), prefix) {
			continue
		}
		dir := filepath.Join(base, e.Name())
		b, err := os.ReadFile(filepath.Join(dir, ownerFile))
		if err != nil {
			continue
		}
		f := strings.Fields(string(b))
		if len(f) != 2 {
			continue
		}
		pid, err := strconv.Atoi(f[0])
		if err != nil {
			continue
		}
		if start, alive := procStart(pid); alive && start == f[1] {
			continue
		}
		if os.RemoveAll(dir) == nil {
			removed = append(removed, dir)
		}
	}
	return removed
}
