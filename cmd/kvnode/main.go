// Command kvnode runs a node of the Rafty replicated key-value store and
// talks to a running cluster.
//
//	kvnode serve --peers 1=127.0.0.1:7001,2=127.0.0.1:7002,3=127.0.0.1:7003 --id 1 ...
//	kvnode put greeting hello --endpoints 127.0.0.1:23791,127.0.0.1:23792
//	kvnode put report - < report.json       (or --file report.json)
//	kvnode get greeting
//	kvnode txn --if 'value(greeting)=hello' --then 'put greeting bye' --else 'get greeting'
//	kvnode status --endpoints 127.0.0.1:23791,127.0.0.1:23792,127.0.0.1:23793
//	kvnode snapshot save backup.rbak --endpoints 127.0.0.1:23791,127.0.0.1:23792
//	kvnode snapshot restore backup.rbak --id 1 --peers 1=10.0.0.1:7000,... --data-dir /var/lib/rafty
//	kvnode member list|add NAME --peer-addr A|promote ID|remove ID-or-NAME
//	kvnode serve --join 10.0.0.1:7000,10.0.0.2:7000 --name n4 --peer-addr 10.0.0.4:7000 ...
//	kvnode recover --force-new-cluster --data-dir /var/lib/rafty   (lost quorum; offline)
//	kvnode version
//
// Every flag has an environment twin: KVNODE_ and the flag name in upper
// case with underscores (--peer-template is KVNODE_PEER_TEMPLATE).
//
// # Exit status
//
//	0  success
//	1  the operation failed (cluster unreachable, node failure, ...)
//	2  bad input: an unknown flag or command, a malformed value
//	3  a negative answer: `get` found no key, or a `txn` condition was
//	   false (its --else operations ran)
//
// Errors are reported as one line on standard error, prefixed "kvnode: ".
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/urfave/cli/v3"
)

// Exit statuses; see the package documentation.
const (
	exitOK      = 0
	exitFailure = 1
	exitUsage   = 2
	exitFalse   = 3
)

// exitError carries the exit status an error should end the process with.
// An empty message prints nothing (a txn whose --else branch ran has
// already said so on standard output).
type exitError struct {
	code int
	err  error
}

func (e *exitError) Error() string {
	if e.err == nil {
		return ""
	}
	return e.err.Error()
}

func (e *exitError) Unwrap() error { return e.err }

// usageError marks err as bad input (exit status 2).
func usageError(err error) error { return &exitError{code: exitUsage, err: err} }

// usagef is usageError with formatting.
func usagef(format string, args ...any) error {
	return usageError(fmt.Errorf(format, args...))
}

// falseError marks a negative answer (exit status 3); err may be nil to
// print nothing.
func falseError(err error) error { return &exitError{code: exitFalse, err: err} }

func main() {
	os.Exit(run(context.Background(), os.Args, os.Stdin, os.Stdout, os.Stderr))
}

// run executes the command line args (args[0] is the program name) and
// returns the process's exit status. It never calls os.Exit itself, so
// tests run the whole CLI in-process with given input and captured
// output.
func run(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	err := newApp(stdin, stdout, stderr).Run(ctx, args)
	if err == nil {
		return exitOK
	}
	// Errors kvnode's actions return are all classified (see action);
	// anything else comes from urfave/cli rejecting the command line.
	code := exitUsage
	var ee *exitError
	if errors.As(err, &ee) {
		code = ee.code
	}
	if msg := oneLine(err.Error()); msg != "" {
		fmt.Fprintf(stderr, "kvnode: %s\n", msg)
	}
	return code
}

// oneLine folds a multi-line message (errors.Join uses newlines) into one
// line, so every failure is exactly one line on standard error.
func oneLine(s string) string {
	fields := strings.FieldsFunc(s, func(r rune) bool { return r == '\n' || r == '\r' })
	for i := range fields {
		fields[i] = strings.TrimSpace(fields[i])
	}
	return strings.Join(fields, "; ")
}

// newApp builds the command tree reading stdin and writing to stdout and
// stderr. It is rebuilt per run because urfave/cli keeps parse state in
// its flags.
func newApp(stdin io.Reader, stdout, stderr io.Writer) *cli.Command {
	root := &cli.Command{
		Name:      "kvnode",
		Usage:     "run a node of the Rafty replicated key-value store, or talk to a cluster",
		UsageText: "kvnode COMMAND [flags] [args]",
		Description: "Every flag can also be set through its environment twin: KVNODE_ followed by the\n" +
			"flag name in upper case with dashes as underscores (--peer-template: KVNODE_PEER_TEMPLATE).\n" +
			"Exit status: 0 success, 1 failure, 2 bad input, 3 key not found / txn condition false.",
		Reader:          stdin,
		Writer:          stdout,
		ErrWriter:       stderr,
		HideHelpCommand: true,
		// run reports errors; the default handler would call os.Exit.
		ExitErrHandler: func(context.Context, *cli.Command, error) {},
		Commands: []*cli.Command{
			serveCommand(),
			putCommand(),
			getCommand(),
			delCommand(),
			scanCommand(),
			txnCommand(),
			statusCommand(),
			healthCommand(),
			benchCommand(),
			snapshotCommand(),
			memberCommand(),
			recoverCommand(),
			versionCommand(),
		},
		Action: func(_ context.Context, cmd *cli.Command) error {
			if cmd.NArg() > 0 {
				return usagef("unknown command %q (see kvnode --help)", cmd.Args().First())
			}
			return cli.ShowRootCommandHelp(cmd)
		},
	}
	setUsageErrorHandlers(root)
	return root
}

// setUsageErrorHandlers makes every command report a malformed command
// line as the parser's one-line message instead of "Incorrect Usage"
// followed by the full help text.
func setUsageErrorHandlers(cmd *cli.Command) {
	cmd.OnUsageError = func(_ context.Context, _ *cli.Command, err error, _ bool) error {
		return usageError(errors.New(flagSpelling(err.Error())))
	}
	for _, sub := range cmd.Commands {
		setUsageErrorHandlers(sub)
	}
}

// flagSpelling rewrites the standard flag parser's "-name" (its messages
// spell every flag with one dash) to the "--name" the help text shows.
func flagSpelling(msg string) string {
	if name, ok := strings.CutPrefix(msg, "flag provided but not defined: -"); ok {
		return "unknown flag --" + strings.TrimPrefix(name, "-")
	}
	if name, ok := strings.CutPrefix(msg, "flag needs an argument: -"); ok {
		return "flag --" + strings.TrimPrefix(name, "-") + " needs a value"
	}
	return strings.Replace(msg, " for flag -", " for flag --", 1)
}

// action adapts a command implementation: any error it returns that has no
// exit status yet is an operational failure (exit status 1). Bad input is
// marked with usageError where it is detected.
func action(fn cli.ActionFunc) cli.ActionFunc {
	return func(ctx context.Context, cmd *cli.Command) error {
		err := fn(ctx, cmd)
		if err == nil {
			return nil
		}
		var ee *exitError
		if errors.As(err, &ee) {
			return err
		}
		return &exitError{code: exitFailure, err: err}
	}
}

// wantArgs checks the number of positional arguments of cmd, which
// urfave/cli leaves to the command. The usage names the command's whole
// path, so a subcommand reads "kvnode snapshot save FILE".
func wantArgs(cmd *cli.Command, lo, hi int, usage string) error {
	n := cmd.NArg()
	if n < lo || n > hi {
		return usagef("usage: %s %s (got %d argument%s)", cmd.FullName(), usage, n, plural(n))
	}
	return nil
}

func plural(n int) string {
	if n == 1 {
		return ""
	}
	return "s"
}
