package main

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"runtime/debug"
	"slices"
	"strings"
)

// etcdModule and etcdVersion name the etcd release this member is built
// from; pinned in go.mod.
const (
	etcdModule  = "go.etcd.io/etcd/server/v3"
	etcdVersion = "v3.7.3"
	// raftyPrefix starts the module paths of Rafty's main module and its
	// nested modules: none may be linked into the etcd member.
	raftyPrefix = "github.com/rafty-db/rafty"
)

// module is a module path and version as a binary's build information
// (`go version -m`) or a go.mod require line names it.
type module struct {
	Path, Version string
	Replaced      bool // built from a replacement (a `=>` line)
}

// fromBuildInfo lists the dependencies linked into a binary.
func fromBuildInfo(deps []*debug.Module) []module {
	out := make([]module, 0, len(deps))
	for _, d := range deps {
		out = append(out, module{Path: d.Path, Version: d.Version, Replaced: d.Replace != nil})
	}
	return out
}

// parseGoVersionM reads the dependencies from the output of `go version -m
// BINARY`: "\tdep\tPATH\tVERSION\tSUM" lines, each replaced one followed by a
// "\t=>\tPATH\tVERSION\tSUM" line.
func parseGoVersionM(out []byte) []module {
	var mods []module
	sc := bufio.NewScanner(bytes.NewReader(out))
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		switch {
		case len(f) >= 3 && f[0] == "dep":
			mods = append(mods, module{Path: f[1], Version: f[2]})
		case len(f) >= 2 && f[0] == "=>" && len(mods) > 0:
			mods[len(mods)-1].Replaced = true
		}
	}
	return mods
}

// parseRequires reads the require directives of a go.mod file (single
// lines and blocks; comments dropped). It is not a general go.mod parser:
// it reads what `go mod tidy` writes.
func parseRequires(gomod []byte) (map[string]string, error) {
	req := map[string]string{}
	inBlock := false
	sc := bufio.NewScanner(bytes.NewReader(gomod))
	for sc.Scan() {
		line := sc.Text()
		if i := strings.Index(line, "//"); i >= 0 {
			line = line[:i]
		}
		f := strings.Fields(line)
		switch {
		case len(f) == 0:
			continue
		case inBlock && f[0] == ")":
			inBlock = false
			continue
		case inBlock:
		case f[0] == "require" && len(f) == 2 && f[1] == "(":
			inBlock = true
			continue
		case f[0] == "require" && len(f) == 3:
			f = f[1:]
		default:
			continue
		}
		if len(f) != 2 {
			return nil, fmt.Errorf("cannot read require line %q", sc.Text())
		}
		req[f[0]] = f[1]
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	if len(req) == 0 {
		return nil, errors.New("no require directive")
	}
	return req, nil
}

// checkDeps compares the modules linked into the member (built) with the
// versions etcd's own go.mod (etcdGoMod, that of etcdModule at etcdVersion)
// requires. It returns a report, one line per linked module, and an error
// naming every problem: a module at another version than etcd pins, a
// module etcd's go.mod does not list at all, a replaced module, Rafty's
// module, or etcd itself at another version.
func checkDeps(built []module, etcdGoMod []byte) (string, error) {
	pins, err := parseRequires(etcdGoMod)
	if err != nil {
		return "", fmt.Errorf("etcd's go.mod: %w", err)
	}
	var report strings.Builder
	var problems []string
	seen := false
	for _, m := range slices.SortedFunc(slices.Values(built), func(a, b module) int { return strings.Compare(a.Path, b.Path) }) {
		want, pinned := pins[m.Path]
		state := "= etcd's go.mod"
		switch {
		case m.Path == etcdModule:
			seen = true
			state = "etcd itself"
			if m.Version != etcdVersion {
				problems = append(problems, fmt.Sprintf("%s is %s, want %s", m.Path, m.Version, etcdVersion))
				state = "WRONG etcd version"
			}
		case strings.HasPrefix(m.Path, raftyPrefix):
			problems = append(problems, fmt.Sprintf("Rafty's module %s is linked in", m.Path))
			state = "RAFTY MODULE"
		case !pinned:
			problems = append(problems, fmt.Sprintf("%s %s is not in etcd's go.mod", m.Path, m.Version))
			state = "NOT IN etcd's go.mod"
		case m.Version != want:
			problems = append(problems, fmt.Sprintf("%s is %s, etcd pins %s", m.Path, m.Version, want))
			state = "DIFFERS: etcd pins " + want
		}
		if m.Replaced {
			problems = append(problems, fmt.Sprintf("%s is replaced", m.Path))
			state += ", REPLACED"
		}
		fmt.Fprintf(&report, "%-75s %-40s %s\n", m.Path, m.Version, state)
	}
	if !seen {
		problems = append(problems, etcdModule+" is not linked in")
	}
	if len(problems) > 0 {
		return report.String(), errors.New(strings.Join(problems, "; "))
	}
	return report.String(), nil
}
