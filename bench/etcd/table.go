package main

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"sort"
	"strconv"
	"strings"

	"github.com/rafty-db/rafty/bench/workload"
)

// tableMain is `etcdbench table [--out FILE] PATH...`: read results (JSON
// files, or directories of *.json files) and print the markdown comparison:
// a header naming the machine, the versions and the settings, then
// workload.Table, one per keyspace (largest first) when the results span
// several.
func tableMain(args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("table", stderr)
	out := fs.String("out", "", "write the markdown to this file instead of standard output")
	header := fs.Bool("header", true, "print the machine, versions and settings above the table")
	raftyVersion := fs.String("rafty-version", "", "Rafty's version for the header when its results carry none or a (devel) one (e.g. a git commit)")
	var notes []string
	fs.Func("note", "a sentence to add to the header's settings (repeatable)", func(s string) error {
		if s = strings.TrimSpace(s); s != "" {
			notes = append(notes, s)
		}
		return nil
	})
	if err := parseFlags(fs, args, true); err != nil {
		return err
	}
	if fs.NArg() == 0 {
		return usagef("want result files or directories")
	}
	results, err := readResults(fs.Args())
	if err != nil {
		return err
	}
	if len(results) == 0 {
		return errors.New("no results found")
	}
	var b strings.Builder
	if *header {
		b.WriteString(tableHeader(results, *raftyVersion, notes))
		b.WriteString("\n")
	}
	b.WriteString(keyspaceTables(results))
	if *out == "" {
		_, err = io.WriteString(stdout, b.String())
		return err
	}
	return os.WriteFile(*out, []byte(b.String()), 0o644)
}

// readResults reads every result in paths: files hold one or more JSON
// objects; directories contribute their *.json files, sorted.
func readResults(paths []string) ([]workload.Result, error) {
	var files []string
	for _, p := range paths {
		st, err := os.Stat(p)
		if err != nil {
			return nil, err
		}
		if !st.IsDir() {
			files = append(files, p)
			continue
		}
		m, err := filepath.Glob(filepath.Join(p, "*.json"))
		if err != nil {
			return nil, err
		}
		sort.Strings(m)
		files = append(files, m...)
	}
	var results []workload.Result
	for _, f := range files {
		fh, err := os.Open(f)
		if err != nil {
			return nil, err
		}
		dec := json.NewDecoder(bufio.NewReader(fh))
		for {
			var r workload.Result
			err := dec.Decode(&r)
			if errors.Is(err, io.EOF) {
				break
			}
			if err != nil {
				fh.Close()
				return nil, fmt.Errorf("%s: %w", f, err)
			}
			results = append(results, r)
		}
		fh.Close()
	}
	return results, nil
}

// keyspaceTables is workload.Table of the results, or with several
// keyspaces one table per keyspace, largest first, each under a line
// naming it (so the first table, the one docs/benchmarks.md's chart is
// drawn from, is of the largest keyspace).
func keyspaceTables(results []workload.Result) string {
	byKeys := map[int][]workload.Result{}
	for _, r := range results {
		byKeys[r.Keys] = append(byKeys[r.Keys], r)
	}
	if len(byKeys) == 1 {
		return workload.Table(results)
	}
	keys := slices.Sorted(maps.Keys(byKeys))
	slices.Reverse(keys)
	var b strings.Builder
	for i, k := range keys {
		if i > 0 {
			b.WriteString("\n")
		}
		fmt.Fprintf(&b, "Keyspace %s keys:\n\n", thousands(k))
		b.WriteString(workload.Table(byKeys[k]))
	}
	return b.String()
}

// tableHeader describes where and how the results were measured.
// raftyVersion names Rafty's version when its results do not; notes are
// added to the settings.
func tableHeader(results []workload.Result, raftyVersion string, notes []string) string {
	versions := map[string][]string{}
	rounds := 0
	var conns, keys, secs, warm, leader []string
	add := func(list *[]string, v string) {
		if !slices.Contains(*list, v) {
			*list = append(*list, v)
		}
	}
	perPoint := map[string]int{}
	loadLo, loadHi := -1.0, -1.0
	for _, r := range results {
		sys := strings.ToLower(r.System)
		v := r.Version
		if sys == workload.SystemRafty && raftyVersion != "" {
			switch {
			case v == "":
				v = raftyVersion
			case strings.Contains(v, "(devel)"):
				// Built without VCS stamping: name the commit.
				v += " (" + raftyVersion + ")"
			}
		}
		if v == "" {
			v = "unknown version"
		}
		if r.LoadAvg1 > 0 {
			if loadLo < 0 || r.LoadAvg1 < loadLo {
				loadLo = r.LoadAvg1
			}
			loadHi = max(loadHi, r.LoadAvg1)
		}
		if !slices.Contains(versions[sys], v) {
			versions[sys] = append(versions[sys], v)
		}
		add(&conns, strconv.Itoa(r.Conns))
		add(&keys, thousands(r.Keys))
		add(&secs, strconv.FormatFloat(r.Seconds, 'f', -1, 64))
		add(&warm, strconv.FormatFloat(r.Warmup.Seconds(), 'f', -1, 64))
		if r.LeaderOnly {
			add(&leader, "to the leader")
		} else {
			add(&leader, "spread over the members")
		}
		k := fmt.Sprintf("%s/%s/%d/%d/%d/%d", sys, r.Op, r.Concurrency, r.ValueBytes, r.Conns, r.Keys)
		perPoint[k]++
		rounds = max(rounds, perPoint[k])
	}
	ver := func(sys string) string {
		if len(versions[sys]) == 0 {
			return "not run"
		}
		return strings.Join(versions[sys], ", ")
	}
	var b strings.Builder
	load := ""
	if loadLo >= 0 {
		load = fmt.Sprintf(" 1-minute load average at the end of each run: %.1f–%.1f.", loadLo, loadHi)
	}
	fmt.Fprintf(&b, "Machine: %s. Go %s.%s\n\n", machine(), strings.TrimPrefix(runtime.Version(), "go"), load)
	fmt.Fprintf(&b, "Versions: Rafty %s; %s (go.etcd.io/etcd/server/v3 embed, one member per process).\n\n",
		ver(workload.SystemRafty), ver(workload.SystemEtcd))
	fmt.Fprintf(&b, "Settings: 3 members per system on loopback, data on the same disk, fsync on, logs at warn; "+
		"closed loop, %s client connection(s) %s; keyspace %s keys, %s-second window after %s-second warm-up; "+
		"up to %d round(s), the systems alternating, each with a fresh cluster; figures are medians over rounds, "+
		"ratios are Rafty/etcd of the medians (throughput: above 1 favours Rafty; latency and CPU: below 1 does). "+
		"CPU is the three servers' user+system time per 1,000 successful operations.",
		strings.Join(conns, "/"), strings.Join(leader, "/"), strings.Join(keys, "/"),
		strings.Join(secs, "/"), strings.Join(warm, "/"), rounds)
	for _, n := range notes {
		b.WriteString(" " + n)
	}
	b.WriteString("\n")
	return b.String()
}

// machine describes this machine from /proc: CPU model, CPUs, memory,
// kernel.
func machine() string {
	model := "unknown CPU"
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for line := range strings.SplitSeq(string(b), "\n") {
			if k, v, ok := strings.Cut(line, ":"); ok && strings.TrimSpace(k) == "model name" {
				model = strings.TrimSpace(v)
				break
			}
		}
	}
	mem := ""
	if b, err := os.ReadFile("/proc/meminfo"); err == nil {
		for line := range strings.SplitSeq(string(b), "\n") {
			if v, ok := strings.CutPrefix(line, "MemTotal:"); ok {
				kb, _ := strconv.ParseFloat(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 64)
				mem = fmt.Sprintf(", %.0f GiB", kb/(1<<20))
			}
		}
	}
	kernel := ""
	if b, err := os.ReadFile("/proc/sys/kernel/osrelease"); err == nil {
		kernel = ", Linux " + strings.TrimSpace(string(b))
	}
	return fmt.Sprintf("%s, %d CPUs%s%s", model, runtime.NumCPU(), mem, kernel)
}

func thousands(n int) string {
	s := strconv.Itoa(n)
	for i := len(s) - 3; i > 0; i -= 3 {
		s = s[:i] + "," + s[i:]
	}
	return s
}
