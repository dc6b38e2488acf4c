package workload

import (
	"bytes"
	"fmt"
	"os"
	"strconv"
	"strings"
)

// clockTicks is USER_HZ, the unit of the times in /proc/PID/stat. Linux
// fixes it at 100 for user space on every architecture Go supports.
const clockTicks = 100

// ProcCPUSeconds returns the CPU time (utime + stime, all threads) the
// processes pids have used so far, summed, from /proc/PID/stat (Linux).
func ProcCPUSeconds(pids []int) (float64, error) {
	var total float64
	for _, pid := range pids {
		s, err := procStatCPU(fmt.Sprintf("/proc/%d/stat", pid))
		if err != nil {
			return 0, fmt.Errorf("pid %d: %w", pid, err)
		}
		total += s
	}
	return total, nil
}

// SelfCPUSeconds returns the calling process's CPU time so far.
func SelfCPUSeconds() (float64, error) { return procStatCPU("/proc/self/stat") }

func procStatCPU(path string) (float64, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0, err
	}
	return parseStatCPU(b)
}

// parseStatCPU reads utime and stime (fields 14 and 15) from the contents
// of a /proc/PID/stat file. The command name (field 2) is in parentheses
// and may hold spaces and parentheses itself, so fields are counted from
// its last closing parenthesis.
func parseStatCPU(b []byte) (float64, error) {
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0, fmt.Errorf("malformed stat %q", b)
	}
	f := strings.Fields(string(b[i+1:]))
	// f[0] is field 3 (state): utime (14) is f[11], stime (15) f[12].
	if len(f) < 13 {
		return 0, fmt.Errorf("malformed stat: %d fields after the name", len(f))
	}
	u, err1 := strconv.ParseUint(f[11], 10, 64)
	s, err2 := strconv.ParseUint(f[12], 10, 64)
	if err1 != nil || err2 != nil {
		return 0, fmt.Errorf("malformed stat times %q %q", f[11], f[12])
	}
	return float64(u+s) / clockTicks, nil
}

// LoadAvg1 returns the 1-minute load average from /proc/loadavg.
func LoadAvg1() (float64, error) {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return 0, err
	}
	f := strings.Fields(string(b))
	if len(f) == 0 {
		return 0, fmt.Errorf("malformed /proc/loadavg %q", b)
	}
	return strconv.ParseFloat(f[0], 64)
}

// ParsePids parses a comma-separated list of process IDs ("" is none).
func ParsePids(s string) ([]int, error) {
	var pids []int
	for part := range strings.SplitSeq(s, ",") {
		part = strings.TrimSpace(part)
		if part == "" {
			continue
		}
		p, err := strconv.Atoi(part)
		if err != nil || p <= 0 {
			return nil, fmt.Errorf("bad pid %q", part)
		}
		pids = append(pids, p)
	}
	return pids, nil
}
