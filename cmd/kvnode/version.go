package main

import (
	"context"
	"fmt"
	"runtime"
	"runtime/debug"
	"strings"

	"github.com/urfave/cli/v3"
)

// version and commit are the release version and its VCS revision, set
// when building a release:
//
//	go build -ldflags "-X main.version=v1.2.0 -X main.commit=$(git rev-parse HEAD)" ./cmd/kvnode
//
// Left empty, what Go recorded in the binary is used: the main module's
// version ("(devel)" for a build from a source tree) and the revision go
// build stamps from a git checkout (unless built with -buildvcs=false).
var version, commit string

// buildVersion describes the running binary.
type buildVersion struct {
	Version   string // the release or module version
	Commit    string // the VCS revision ("" if unknown)
	Time      string // the commit's time, RFC 3339 ("" if unknown)
	Modified  bool   // built from a tree with uncommitted changes
	GoVersion string
	Platform  string // GOOS/GOARCH
}

// readBuildVersion reads what the linker and the Go toolchain recorded:
// -X main.version if set, else the main module's version, and the VCS
// stamp go build adds from a git checkout (-buildvcs, on by default).
func readBuildVersion(ldVersion, ldCommit string, info *debug.BuildInfo, ok bool) buildVersion {
	v := buildVersion{Version: ldVersion, GoVersion: runtime.Version(), Platform: runtime.GOOS + "/" + runtime.GOARCH}
	if !ok || info == nil {
		info = &debug.BuildInfo{}
	}
	if info.GoVersion != "" {
		v.GoVersion = info.GoVersion
	}
	if v.Version == "" {
		v.Version = info.Main.Version
	}
	if v.Version == "" {
		v.Version = "(devel)"
	}
	if ldCommit != "" {
		v.Commit = ldCommit
		return v
	}
	for _, s := range info.Settings {
		switch s.Key {
		case "vcs.revision":
			v.Commit = s.Value
		case "vcs.time":
			v.Time = s.Value
		case "vcs.modified":
			v.Modified = s.Value == "true"
		}
	}
	return v
}

// currentVersion is the running binary's buildVersion.
func currentVersion() buildVersion {
	info, ok := debug.ReadBuildInfo()
	return readBuildVersion(version, commit, info, ok)
}

// short is the version with the first 12 digits of the commit and the Go
// version, for one-line reports: "v1.2.0 0123456789ab+ go1.26.0" (+:
// uncommitted changes).
func (v buildVersion) short() string {
	s := v.Version
	if c := v.Commit; c != "" {
		s += " " + c[:min(len(c), 12)]
		if v.Modified {
			s += "+"
		}
	}
	return s + " " + v.GoVersion
}

// versionCommand is `kvnode version`.
func versionCommand() *cli.Command {
	return &cli.Command{
		Name:      "version",
		Usage:     "print the version, the commit it was built from and the Go version",
		UsageText: "kvnode version",
		Action: action(func(_ context.Context, cmd *cli.Command) error {
			if err := wantArgs(cmd, 0, 0, ""); err != nil {
				return err
			}
			v := currentVersion()
			var b strings.Builder
			fmt.Fprintf(&b, "kvnode %s\n", v.Version)
			commit := v.Commit
			if commit == "" {
				commit = "unknown (built without VCS information: -buildvcs=false or not from a git checkout)"
			}
			if v.Time != "" {
				commit += " (" + v.Time + ")"
			}
			if v.Modified {
				commit += ", with uncommitted changes"
			}
			fmt.Fprintf(&b, "commit:   %s\n", commit)
			fmt.Fprintf(&b, "go:       %s\n", v.GoVersion)
			fmt.Fprintf(&b, "platform: %s\n", v.Platform)
			_, err := fmt.Fprint(cmd.Writer, b.String())
			return err
		}),
	}
}
