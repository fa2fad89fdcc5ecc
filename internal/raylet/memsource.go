package raylet

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// memorySource is what the memory monitor reads of the system (procMemory;
// a fake in tests).
type memorySource interface {
	// node is the node's memory in use and its total.
	node() (nodeMemory, error)
	// private is the private memory of process pid (its RssAnon: the heap
	// and stacks it allocated, not the object store's shared pages nor the
	// binary's).
	private(pid int) (uint64, error)
	// oomKills is the kernel's count of processes its OOM killer killed
	// since boot (/proc/vmstat oom_kill).
	oomKills() (uint64, error)
}

// nodeMemory is the node's memory use as the monitor sees it.
type nodeMemory struct {
	used, total uint64
	// source names what was measured: "system" (/proc/meminfo: MemTotal
	// minus MemAvailable) or "cgroup <dir>" (usage minus inactive file
	// pages, against the cgroup's limit).
	source string
}

func (m nodeMemory) fraction() float64 {
	if m.total == 0 {
		return 0
	}
	return float64(m.used) / float64(m.total)
}

// procMemory reads /proc and the raylet's memory cgroup (v1 or v2).
type procMemory struct {
	proc string // "/proc"
	// cgroup is the raylet's memory cgroup directory ("" when none is
	// found), and v2 says which version's files it has.
	cgroup string
	v2     bool
}

// newProcMemory finds the raylet's memory cgroup under cgroupRoot
// (/sys/fs/cgroup).
func newProcMemory(proc, cgroupRoot string) *procMemory {
	m := &procMemory{proc: proc}
	b, err := os.ReadFile(filepath.Join(proc, "self", "cgroup"))
	if err != nil {
		return m
	}
	for _, line := range strings.Split(strings.TrimSpace(string(b)), "\n") {
		parts := strings.SplitN(line, ":", 3)
		if len(parts) != 3 {
			continue
		}
		switch {
		case parts[0] == "0" && parts[1] == "":
			// v2, unless the v1 memory controller is mounted too (then v1
			// holds the memory files).
			dir := filepath.Join(cgroupRoot, parts[2])
			if m.cgroup == "" && fileExists(filepath.Join(dir, "memory.max")) {
				m.cgroup, m.v2 = dir, true
			}
		case strings.Contains(","+parts[1]+",", ",memory,"):
			for _, dir := range []string{filepath.Join(cgroupRoot, "memory", parts[2]), filepath.Join(cgroupRoot, "memory")} {
				if fileExists(filepath.Join(dir, "memory.limit_in_bytes")) {
					m.cgroup, m.v2 = dir, false
					break
				}
			}
		}
	}
	return m
}

func (m *procMemory) node() (nodeMemory, error) {
	info, err := readKV(filepath.Join(m.proc, "meminfo"), ":")
	if err != nil {
		return nodeMemory{}, err
	}
	total, avail := info["MemTotal"]*1024, info["MemAvailable"]*1024
	if total == 0 {
		return nodeMemory{}, errors.New("memory monitor: /proc/meminfo has no MemTotal")
	}
	sys := nodeMemory{used: total - min(avail, total), total: total, source: "system"}
	if m.cgroup == "" {
		return sys, nil
	}
	cg, err := m.cgroupMemory()
	if err != nil || cg.total == 0 || cg.total >= total || cg.fraction() < sys.fraction() {
		return sys, nil
	}
	return cg, nil
}

// cgroupMemory is the cgroup's usage without its inactive file pages
// (Ray's measure), against its limit; total is 0 without a limit.
func (m *procMemory) cgroupMemory() (nodeMemory, error) {
	limitFile, usageFile, inactive := "memory.limit_in_bytes", "memory.usage_in_bytes", "total_inactive_file"
	if m.v2 {
		limitFile, usageFile, inactive = "memory.max", "memory.current", "inactive_file"
	}
	limit, err := readUint(filepath.Join(m.cgroup, limitFile))
	if err != nil {
		return nodeMemory{}, err // "max": no limit
	}
	usage, err := readUint(filepath.Join(m.cgroup, usageFile))
	if err != nil {
		return nodeMemory{}, err
	}
	stat, err := readKV(filepath.Join(m.cgroup, "memory.stat"), " ")
	if err != nil {
		return nodeMemory{}, err
	}
	used := usage - min(stat[inactive], usage)
	return nodeMemory{used: used, total: limit, source: "cgroup " + m.cgroup}, nil
}

func (m *procMemory) private(pid int) (uint64, error) {
	st, err := readKV(filepath.Join(m.proc, strconv.Itoa(pid), "status"), ":")
	if err != nil {
		return 0, err
	}
	if v, ok := st["RssAnon"]; ok {
		return v * 1024, nil
	}
	return st["VmRSS"] * 1024, nil // kernels before 4.5
}

func (m *procMemory) oomKills() (uint64, error) {
	st, err := readKV(filepath.Join(m.proc, "vmstat"), " ")
	if err != nil {
		return 0, err
	}
	v, ok := st["oom_kill"]
	if !ok {
		return 0, errors.New("memory monitor: /proc/vmstat has no oom_kill (kernel before 4.13)")
	}
	return v, nil
}

// readKV reads the "key<sep> value [kB]" lines of a /proc or cgroup file;
// values that are not numbers are left out.
func readKV(path, sep string) (map[string]uint64, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("memory monitor: %w", err)
	}
	out := make(map[string]uint64)
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), sep)
		if !ok {
			continue
		}
		f := strings.Fields(v)
		if len(f) == 0 {
			continue
		}
		if n, err := strconv.ParseUint(f[0], 10, 64); err == nil {
			out[strings.TrimSpace(k)] = n
		}
	}
	return out, nil
}

func readUint(path string) (uint64, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0, fmt.Errorf("memory monitor: %w", err)
	}
	n, err := strconv.ParseUint(strings.TrimSpace(string(b)), 10, 64)
	if err != nil {
		return 0, fmt.Errorf("memory monitor: %s: %w", path, err)
	}
	return n, nil
}

func fileExists(path string) bool {
	_, err := os.Stat(path)
	return err == nil
}

// fmtBytes is n in binary units, e.g. "300.0 MiB".
func fmtBytes(n uint64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := uint64(unit), 0
	for m := n / unit; m >= unit && exp < 4; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGTP"[exp])
}
