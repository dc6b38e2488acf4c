// Command etcdbench runs the etcd half of Rafty's side by side benchmark: a
// 3-member etcd cluster (one etcd-member process per member: the separate
// module in member/, built with etcd's own dependency versions) and a load
// generator (go.etcd.io/etcd/client/v3) that drives the workload defined in
// github.com/rafty-db/rafty/bench/workload.
//
//	etcdbench cluster [--data-dir DIR]            # prints {"endpoints":[...],"pids":[...]} when healthy
//	etcdbench load --endpoints A,B,C --leader-only --op put --concurrency 16 --json --pids P1,P2,P3
//	etcdbench table artifacts/bench/results       # markdown comparison table
//	etcdbench chart --out chart.svg artifacts/bench/results  # throughput–latency chart
//	etcdbench ports N                             # N free loopback ports (for scripts)
//
// It lives in its own Go module so etcd never becomes a dependency of
// github.com/rafty-db/rafty; the etcd server lives in a third module
// (member/) so that Rafty's dependency versions never reach it. See README.md.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
)

const usage = `usage: etcdbench COMMAND [flags]

commands:
  cluster   start a 3-member etcd cluster on loopback, print its endpoints and
            member PIDs as JSON when healthy, stop it on SIGTERM/SIGINT
  load      drive a workload against --endpoints and print the result
  table     render result JSON files as the Rafty/etcd markdown table
  chart     draw result JSON files (or a markdown table) as a throughput-latency SVG
  ports     print N free loopback TCP ports

"etcdbench COMMAND -h" lists a command's flags.
`

// errUsage marks bad input: exit status 2.
var errUsage = errors.New("usage")

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	os.Exit(run(ctx, os.Args[1:], os.Stdout, os.Stderr))
}

// run executes one command and returns the exit status: 0 success, 1
// failure, 2 bad input.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return 2
	}
	var err error
	switch args[0] {
	case "cluster":
		err = clusterMain(ctx, args[1:], stdout, stderr)
	case "load":
		err = loadMain(ctx, args[1:], stdout, stderr)
	case "table":
		err = tableMain(args[1:], stdout, stderr)
	case "chart":
		err = chartMain(args[1:], stdout, stderr)
	case "ports":
		err = portsMain(args[1:], stdout, stderr)
	case "-h", "--help", "help":
		fmt.Fprint(stdout, usage)
		return 0
	default:
		fmt.Fprintf(stderr, "etcdbench: unknown command %q\n%s", args[0], usage)
		return 2
	}
	switch {
	case err == nil:
		return 0
	case errors.Is(err, flag.ErrHelp):
		return 0
	case errors.Is(err, errUsage):
		fmt.Fprintf(stderr, "etcdbench %s: %v\n", args[0], err)
		return 2
	default:
		fmt.Fprintf(stderr, "etcdbench %s: %v\n", args[0], err)
		return 1
	}
}

// newFlagSet returns a flag set for command name that reports errors
// through its return value.
func newFlagSet(name string, stderr io.Writer) *flag.FlagSet {
	fs := flag.NewFlagSet("etcdbench "+name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	return fs
}

// parseFlags parses args, turning parse errors into errUsage and
// rejecting positional arguments unless allowArgs.
func parseFlags(fs *flag.FlagSet, args []string, allowArgs bool) error {
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return err
		}
		return fmt.Errorf("%w: %v", errUsage, err)
	}
	if !allowArgs && fs.NArg() > 0 {
		return fmt.Errorf("%w: unexpected argument %q", errUsage, fs.Arg(0))
	}
	return nil
}

func usagef(format string, args ...any) error {
	return fmt.Errorf("%w: %s", errUsage, fmt.Sprintf(format, args...))
}
