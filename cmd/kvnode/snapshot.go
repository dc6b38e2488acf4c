package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/urfave/cli/v3"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/rafty-db/rafty/app/kv/kvpb"
	"github.com/rafty-db/rafty/core"
	"github.com/rafty-db/rafty/driver"
)

// `kvnode snapshot`: consistent backups of a live cluster (save), their
// verification (inspect), and the offline restore that seeds the data
// directories of a new cluster from one (restore).

// Flags of `kvnode snapshot save`.
const (
	flagForce           = "force"
	flagTransferTimeout = "transfer-timeout"

	// defaultTransferTimeout bounds one member's whole transfer: generous,
	// because it must cover the largest data set at the slowest link, yet
	// finite, because a connection that silently stalls mid-stream would
	// otherwise hang the command until TCP gives up (many minutes).
	defaultTransferTimeout = time.Hour
)

// lostFound is what mkfs puts at the root of a new ext2/3/4 file system:
// a data directory that is a volume's mount point holds it from the start,
// so a restore does not count it as data.
const lostFound = "lost+found"

// snapshotCommand groups the backup commands.
func snapshotCommand() *cli.Command {
	return &cli.Command{
		Name:  "snapshot",
		Usage: "save a backup of a live cluster, verify one, or restore one into a new member's data directory",
		UsageText: "kvnode snapshot save FILE [--force] [--endpoints HOST:PORT,...]\n" +
			"kvnode snapshot inspect FILE\n" +
			"kvnode snapshot restore FILE --id N --peers ID=HOST:PORT,... --data-dir DIR",
		Commands: []*cli.Command{snapshotSaveCommand(), snapshotInspectCommand(), snapshotRestoreCommand()},
		Action: func(_ context.Context, cmd *cli.Command) error {
			if cmd.NArg() > 0 {
				return usagef("unknown command \"snapshot %s\" (want save, inspect or restore)", cmd.Args().First())
			}
			return cli.ShowSubcommandHelp(cmd)
		},
	}
}

func snapshotSaveCommand() *cli.Command {
	return &cli.Command{
		Name:  "save",
		Usage: "write a consistent backup of a live cluster to FILE",
		UsageText: "kvnode snapshot save FILE [--force] [--endpoints HOST:PORT,...]\n\n" +
			"The first endpoint that answers takes the backup after a linearizable read barrier, so it holds\n" +
			"every write acknowledged before the command started; writes go on meanwhile. The backup is\n" +
			"written to FILE.tmp, synced, verified, and only then renamed to FILE: FILE never holds a partial\n" +
			"backup. An existing FILE is left alone unless --force is given.\n" +
			"Prints one line: the backup's Raft index and term, its members, its size and how long it took.",
		Flags: snapshotSaveFlags(),
		Action: action(func(ctx context.Context, cmd *cli.Command) error {
			if err := wantArgs(cmd, 1, 1, "FILE"); err != nil {
				return err
			}
			file := cmd.Args().First()
			if file == "" {
				return usagef("snapshot save: FILE must not be empty")
			}
			if d := cmd.Duration(flagTransferTimeout); d <= 0 {
				return usagef("--%s must be positive, got %v", flagTransferTimeout, d)
			}
			c, err := clientFromFlags(cmd)
			if err != nil {
				return err
			}
			defer c.Close()
			// Ctrl-C or SIGTERM cancels the transfer, so the deferred
			// clean-up removes FILE.tmp instead of the process dying with
			// it half written.
			ctx, stop := signal.NotifyContext(ctx, stopSignals...)
			defer stop()
			saved, err := saveBackup(ctx, c, file, saveOptions{
				force:           cmd.Bool(flagForce),
				timeout:         cmd.Duration(flagTimeout),
				attemptTimeout:  cmd.Duration(flagAttemptTimeout),
				transferTimeout: cmd.Duration(flagTransferTimeout),
				progress:        cmd.Root().ErrWriter,
			})
			if err != nil {
				return fmt.Errorf("snapshot save: %w", err)
			}
			_, err = fmt.Fprintf(cmd.Writer, "saved %s: index %d, term %d, members %s, %d bytes, %v (from member %d at %s)\n",
				file, saved.meta.GetIndex(), saved.meta.GetTerm(),
				describeMembers(saved.meta.GetVoters(), saved.meta.GetOutgoingVoters(), saved.meta.GetLearners()),
				saved.bytes, saved.took.Round(time.Millisecond), saved.member, saved.endpoint)
			return err
		}),
	}
}

// snapshotSaveFlags are the client flags plus save's own. The shared
// --timeout and --attempt-timeout describe one request; a backup is a
// stream of any length, so here they bound only getting it started, and
// --transfer-timeout bounds the transfer.
func snapshotSaveFlags() []cli.Flag {
	flags := withClientFlags(
		// No environment twin: replacing a backup must be asked for on
		// the command line, never inherited from the environment.
		&cli.BoolFlag{Name: flagForce, Usage: "replace FILE if it exists (and a FILE.tmp an interrupted save left behind)"},
		&cli.DurationFlag{Name: flagTransferTimeout, Sources: env(flagTransferTimeout), Value: defaultTransferTimeout, Category: "connection",
			Usage: "bound on one member's whole transfer, once it has started sending"},
	)
	for _, f := range flags {
		d, ok := f.(*cli.DurationFlag)
		if !ok {
			continue
		}
		switch d.Name {
		case flagTimeout:
			d.Usage = "bound on getting the backup started (a member answering with its first data), retries included"
		case flagAttemptTimeout:
			d.Usage = "bound on one endpoint's first data before the next endpoint is tried"
		}
	}
	return flags
}

// saveOptions are save's flag values, and where it reports progress.
type saveOptions struct {
	force                                    bool
	timeout, attemptTimeout, transferTimeout time.Duration
	progress                                 io.Writer // nil: no progress reports
}

// savedBackup describes a backup written by saveBackup.
type savedBackup struct {
	meta     *kvpb.BackupMeta
	member   uint64
	endpoint string
	bytes    uint64
	took     time.Duration
}

// saveBackup streams a backup from the cluster into file. It writes
// file.tmp, syncs and verifies it, then renames it to file and syncs the
// directory, so that file, once it exists, is a complete, verified and
// durable backup. On any failure file.tmp is removed and file untouched.
func saveBackup(ctx context.Context, c *kvClient, file string, o saveOptions) (*savedBackup, error) {
	start := time.Now()
	if err := checkSaveTarget(file, o.force); err != nil {
		return nil, err
	}
	tmp := file + ".tmp"
	mode := os.O_WRONLY | os.O_CREATE | os.O_EXCL
	if o.force {
		mode = os.O_WRONLY | os.O_CREATE | os.O_TRUNC
	}
	// 0600: a backup holds every key and value of the cluster.
	f, err := os.OpenFile(tmp, mode, 0o600)
	if errors.Is(err, fs.ErrExist) {
		return nil, fmt.Errorf("%s exists: another save is writing it, or one was interrupted; remove it or pass --%s", tmp, flagForce)
	}
	if err != nil {
		return nil, unwrapPathError(err)
	}
	kept := false
	defer func() {
		if !kept {
			_ = f.Close() // a second Close after a failed Sync or rename is harmless
			_ = os.Remove(tmp)
		}
	}()

	var dst io.Writer = f
	if o.progress != nil {
		// The size is known only at the end: bytes and rate, no bar.
		p := newProgress(o.progress, "snapshot save", "received", 0)
		defer p.done()
		dst = progressWriter{w: f, p: p}
	}
	saved, err := fetchBackup(ctx, c, dst, o)
	if err != nil {
		return nil, err
	}
	if err := f.Sync(); err != nil {
		return nil, fmt.Errorf("syncing %s: %v", tmp, unwrapPathError(err))
	}
	if err := f.Close(); err != nil {
		return nil, fmt.Errorf("closing %s: %v", tmp, unwrapPathError(err))
	}
	// Read back what reached the disk: a backup is worth keeping only if
	// a restore will accept it.
	if _, _, err := verifyBackupFile(tmp); err != nil {
		return nil, fmt.Errorf("the backup from %s does not verify, nothing saved: %w", saved.endpoint, err)
	}
	// Again, just before the rename: FILE may have appeared during the
	// transfer, and rename would silently replace it.
	if err := checkSaveTarget(file, o.force); err != nil {
		return nil, err
	}
	if err := os.Rename(tmp, file); err != nil {
		return nil, unwrapPathError(err)
	}
	kept = true
	// The rename is durable only once the directory is.
	if err := syncDir(filepath.Dir(file)); err != nil {
		return nil, fmt.Errorf("%s was written but syncing its directory failed: %v", file, err)
	}
	saved.took = time.Since(start)
	return saved, nil
}

// checkSaveTarget refuses to replace an existing file without force, and
// a directory even with it.
func checkSaveTarget(file string, force bool) error {
	fi, err := os.Lstat(file)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return nil
	case err != nil:
		return unwrapPathError(err)
	case fi.IsDir():
		return fmt.Errorf("%s is a directory", file)
	case !force:
		return fmt.Errorf("%s exists; pass --%s to replace it", file, flagForce)
	}
	return nil
}

// syncDir fsyncs a directory, making a rename into it durable.
func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return unwrapPathError(err)
	}
	err = d.Sync()
	if cerr := d.Close(); err == nil {
		err = cerr
	}
	return err
}

// fetchBackup finds a member that sends a backup and streams it into w.
// Like kvClient.call it goes round the endpoints, passing over those that
// cannot take the request (unreachable, no leader: Unavailable) and those
// that send nothing within --attempt-timeout, until --timeout; unlike it,
// it never retries once data has arrived, since w then holds part of a
// backup: a broken transfer is reported, and the operator runs it again.
func fetchBackup(ctx context.Context, c *kvClient, w io.Writer, o saveOptions) (*savedBackup, error) {
	startCtx, cancel := context.WithTimeout(ctx, o.timeout)
	defer cancel()
	startBy, _ := startCtx.Deadline()
	last := make([]error, len(c.clients))
	delay := retryBaseDelay
	for {
		for k := range c.clients {
			if startCtx.Err() != nil {
				return nil, c.gaveUp(startCtx, last, nil, -1, readRetry)
			}
			i := (c.preferred + k) % len(c.clients)
			firstBy := time.Now().Add(o.attemptTimeout)
			if firstBy.After(startBy) {
				firstBy = startBy
			}
			saved, started, err := c.backupFrom(ctx, i, w, firstBy, o.transferTimeout)
			switch {
			case err == nil:
				return saved, nil
			case started:
				return nil, err
			case ctx.Err() != nil:
				return nil, c.gaveUp(ctx, last, nil, -1, readRetry)
			case isContextCode(err):
				last[i] = err // the endpoint sent nothing in time: try the next one
			case retryable(err, readRetry):
				last[i] = err
			default:
				return nil, endpointError(c.endpoints[i], err)
			}
		}
		if err := c.noneListening(last); err != nil {
			return nil, err
		}
		t := time.NewTimer(delay)
		select {
		case <-startCtx.Done():
			t.Stop()
			return nil, c.gaveUp(startCtx, last, nil, -1, readRetry)
		case <-t.C:
		}
		delay = min(2*delay, retryMaxDelay)
	}
}

// backupFrom streams a backup from endpoint i into w. It gives up with
// DeadlineExceeded if no message has arrived by firstBy. started reports
// that data arrived, after which err, if any, is already a full sentence
// about the broken transfer; before that, err is the endpoint's gRPC
// status, for fetchBackup to judge.
func (c *kvClient) backupFrom(ctx context.Context, i int, w io.Writer, firstBy time.Time, transfer time.Duration) (saved *savedBackup, started bool, err error) {
	ctx, cancel := context.WithTimeout(ctx, transfer)
	defer cancel()
	wait := time.Until(firstBy)
	timer := time.AfterFunc(wait, cancel)
	stream, err := c.clients[i].Backup(ctx, &kvpb.BackupRequest{})
	var msg *kvpb.BackupResponse
	if err == nil {
		msg, err = stream.Recv()
	}
	// Stop reports false once the timer has fired: the stream is then
	// cancelled, or about to be, whatever Recv returned.
	switch late := !timer.Stop(); {
	case late:
		return nil, false, status.Errorf(codes.DeadlineExceeded, "no backup data within %v", wait.Round(time.Millisecond))
	case err == io.EOF:
		return nil, false, status.Error(codes.Internal, "the member ended the backup without sending any")
	case err != nil:
		return nil, false, err
	}

	ep := c.endpoints[i]
	var n uint64
	broke := func(why string) error {
		return fmt.Errorf("%s: the transfer broke off after %d bytes: %s; nothing was saved, run the command again", ep, n, why)
	}
	for {
		if meta := msg.GetMeta(); meta != nil {
			if len(msg.GetData()) > 0 {
				return nil, true, broke("the final message carries data (server bug)")
			}
			if _, err := stream.Recv(); err != io.EOF {
				if err == nil {
					return nil, true, broke("messages after the end of the backup (server bug)")
				}
				return nil, true, broke(describeRPCError(err))
			}
			if meta.GetSizeBytes() != n {
				return nil, true, broke(fmt.Sprintf("the member sent %d bytes but says the backup is %d", n, meta.GetSizeBytes()))
			}
			return &savedBackup{meta: meta, member: msg.GetHeader().GetMemberId(), endpoint: ep, bytes: n}, true, nil
		}
		if _, err := w.Write(msg.GetData()); err != nil {
			return nil, true, broke(err.Error())
		}
		n += uint64(len(msg.GetData()))
		msg, err = stream.Recv()
		switch {
		case err == io.EOF:
			return nil, true, broke("the stream ended before the end of the backup")
		case err != nil && ctx.Err() != nil:
			if errors.Is(ctx.Err(), context.DeadlineExceeded) {
				return nil, true, broke(fmt.Sprintf("--%s (%v) passed", flagTransferTimeout, transfer))
			}
			return nil, true, broke("cancelled")
		case err != nil:
			return nil, true, broke(describeRPCError(err))
		}
	}
}

// describeMembers formats a membership for the one-line reports: the
// voters, and any outgoing voters (a backup taken during a membership
// change) and learners.
func describeMembers(voters, outgoing, learners []uint64) string {
	s := joinIDs(voters)
	if len(outgoing) > 0 {
		s += " (joint with " + joinIDs(outgoing) + ")"
	}
	if len(learners) > 0 {
		s += ", learners " + joinIDs(learners)
	}
	return s
}

func snapshotInspectCommand() *cli.Command {
	return &cli.Command{
		Name:  "inspect",
		Usage: "verify a backup's checksums and print its metadata, without restoring it",
		UsageText: "kvnode snapshot inspect FILE\n\n" +
			"Reads FILE once, checking its structure, length and CRC-32C checksums (the same checks a restore\n" +
			"makes before it writes anything), and prints one line: index, term, members and size.",
		Action: action(func(_ context.Context, cmd *cli.Command) error {
			if err := wantArgs(cmd, 1, 1, "FILE"); err != nil {
				return err
			}
			file := cmd.Args().First()
			meta, size, err := verifyBackupFile(file)
			if err != nil {
				return fmt.Errorf("snapshot inspect: %w", err)
			}
			_, err = fmt.Fprintf(cmd.Writer, "%s: index %d, term %d, members %s, %d bytes, checksums OK\n",
				file, meta.Index, meta.Term,
				describeMembers(meta.Membership.Voters, meta.Membership.OutgoingVoters, meta.Membership.Learners), size)
			return err
		}),
	}
}

// verifyBackupFile checks a backup file completely and returns its
// metadata and size. driver.RestoreBackup verifies while it restores; run
// against a target that keeps nothing, it is a verifier reading the file
// once in constant memory. The state machine's own encoding inside the
// data is left to the real restore, which checks it before it changes
// anything; the CRC-32C over the data already covers every byte.
func verifyBackupFile(file string) (core.SnapshotMeta, int64, error) {
	f, err := openBackupFile(file)
	if err != nil {
		return core.SnapshotMeta{}, 0, err
	}
	defer f.Close()
	cr := &countingReader{r: f}
	meta, err := driver.RestoreBackup(cr, driver.RestoreTarget{
		Storage: discardStorage{}, Snapshots: discardSnapshots{}, StateMachine: discardMachine{},
	})
	if err != nil {
		return core.SnapshotMeta{}, 0, fmt.Errorf("%s: %w", file, err)
	}
	return meta, cr.n, nil
}

// openBackupFile opens a backup for reading, with errors that name it.
func openBackupFile(file string) (*os.File, error) {
	if file == "" {
		return nil, usagef("FILE must not be empty")
	}
	f, err := os.Open(file)
	if err != nil {
		return nil, unwrapPathError(err)
	}
	if fi, err := f.Stat(); err == nil && fi.IsDir() {
		_ = f.Close()
		return nil, fmt.Errorf("%s is a directory, want a backup file", file)
	}
	return f, nil
}

// countingReader counts the bytes read through it.
type countingReader struct {
	r io.Reader
	n int64
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += int64(n)
	return n, err
}

// discardStorage is an empty Raft log that forgets what it is given.
type discardStorage struct{}

func (discardStorage) InitialState() (core.HardState, core.SnapshotMeta, error) {
	return core.HardState{}, core.SnapshotMeta{}, nil
}
func (discardStorage) FirstIndex() (uint64, error)                  { return 1, nil }
func (discardStorage) LastIndex() (uint64, error)                   { return 0, nil }
func (discardStorage) Term(uint64) (uint64, error)                  { return 0, nil }
func (discardStorage) Entries(_, _, _ uint64) ([]core.Entry, error) { return nil, nil }
func (discardStorage) Save(core.HardState, []core.Entry) error      { return nil }
func (discardStorage) InstallSnapshot(core.SnapshotMeta) error      { return nil }
func (discardStorage) Compact(uint64) error                         { return nil }
func (discardStorage) Close() error                                 { return nil }

// discardSnapshots is a snapshot store whose snapshots hold no data.
type discardSnapshots struct{}

func (discardSnapshots) CreateSnapshot(core.SnapshotMeta) (driver.SnapshotWriter, error) {
	return discardSink{}, nil
}

func (discardSnapshots) OpenSnapshot(index, term uint64) (core.SnapshotMeta, io.ReadCloser, error) {
	return core.SnapshotMeta{Index: index, Term: term}, io.NopCloser(strings.NewReader("")), nil
}
func (discardSnapshots) OpenLatest() (core.SnapshotMeta, io.ReadCloser, error) {
	return core.SnapshotMeta{}, nil, errors.New("no snapshot kept")
}
func (discardSnapshots) ListSnapshots() ([]core.SnapshotMeta, error) { return nil, nil }

// discardSink accepts a snapshot's data and drops it.
type discardSink struct{}

func (discardSink) Write(p []byte) (int, error) { return len(p), nil }
func (discardSink) Sync() error                 { return nil }
func (discardSink) Commit() error               { return nil }
func (discardSink) Abort() error                { return nil }

// discardMachine is a state machine that holds nothing.
type discardMachine struct{}

func (discardMachine) Applied() (uint64, error) { return 0, nil }
func (discardMachine) Apply([]driver.Command) ([]any, error) {
	return nil, errors.New("a verification target applies nothing")
}
func (discardMachine) Snapshot() (driver.SnapshotSource, error) {
	return nil, errors.New("a verification target has no state")
}
func (discardMachine) Restore(io.Reader) error { return nil }

// restoreFlagNames are the serve flags that decide what a restore writes
// and where: the member's identity, the new cluster's membership and the
// data directory. Taking serve's own definitions (names, environment
// twins, validation) means the command line or environment that will run
// serve also runs the restore.
var restoreFlagNames = []string{flagID, flagHostname, flagPeers, flagPeerTemplate, flagClusterSize, flagDataDir}

func snapshotRestoreCommand() *cli.Command {
	var flags []cli.Flag
	for _, f := range serveFlags() {
		if slices.Contains(restoreFlagNames, f.Names()[0]) {
			flags = append(flags, f)
		}
	}
	return &cli.Command{
		Name:  "restore",
		Usage: "seed a new member's empty data directory from a backup (offline, before its first serve)",
		UsageText: "kvnode snapshot restore FILE --id N --peers ID=HOST:PORT,... --data-dir DIR\n\n" +
			"Takes serve's --id, --peers (or --peer-template with --cluster-size) and --data-dir, and their\n" +
			"environment twins: give the same values serve will get. Restore every member of the new cluster\n" +
			"from the same FILE, each with its own --id and --data-dir, then start them all with serve. The new\n" +
			"cluster's members are those of --peers, whatever the backed-up cluster's were, so a backup of one\n" +
			"cluster can seed another with different addresses. DIR must be empty or absent; on failure\n" +
			"whatever the restore created in it is removed.",
		Flags: flags,
		Action: action(func(_ context.Context, cmd *cli.Command) error {
			if err := wantArgs(cmd, 1, 1, "FILE --id N --peers ID=HOST:PORT,... --data-dir DIR"); err != nil {
				return err
			}
			v := defaultFlagValues()
			v.ID, v.Hostname = cmd.String(flagID), cmd.String(flagHostname)
			v.Peers, v.PeerTemplate, v.ClusterSize = cmd.String(flagPeers), cmd.String(flagPeerTemplate), cmd.Int(flagClusterSize)
			v.DataDir = cmd.String(flagDataDir)
			cfg, err := v.config()
			if err != nil {
				return err
			}
			start := time.Now()
			file := cmd.Args().First()
			meta, size, err := restoreBackup(file, cfg, cmd.Root().ErrWriter)
			if err != nil {
				return fmt.Errorf("snapshot restore: %w", err)
			}
			_, err = fmt.Fprintf(cmd.Writer, "restored %s into %s as member %d: index %d, term %d, members %s, %d bytes, %v\n",
				file, cfg.DataDir, cfg.ID, meta.Index, meta.Term,
				describeMembers(meta.Membership.Voters, meta.Membership.OutgoingVoters, meta.Membership.Learners),
				size, time.Since(start).Round(time.Millisecond))
			return err
		}),
	}
}

// restoreBackup seeds cfg's empty data directory from a backup file,
// opening the storage exactly as serve does, with cfg's peers as the new
// membership, and reports its progress on progressTo (nil: not at all).
// It returns the restored metadata and the file's size. If it fails, it
// removes what it created, leaving the directory as it found it.
func restoreBackup(file string, cfg *serveConfig, progressTo io.Writer) (meta core.SnapshotMeta, size int64, err error) {
	f, err := openBackupFile(file)
	if err != nil {
		return core.SnapshotMeta{}, 0, err
	}
	defer f.Close()
	var src io.Reader = f
	if progressTo != nil {
		var total int64
		if fi, err := f.Stat(); err == nil {
			total = fi.Size()
		}
		p := newProgress(progressTo, "snapshot restore", "read", total)
		defer p.done()
		src = progressReader{r: f, p: p}
	}
	existed, err := checkEmptyDataDir(cfg.DataDir)
	if err != nil {
		return core.SnapshotMeta{}, 0, err
	}
	defer func() {
		if err != nil {
			removeRestored(cfg, existed)
		}
	}()
	// Quiet logs: the directory is new, so the stores have nothing to
	// recover or report, and every failure comes back as err.
	wal, store, err := openStorage(cfg, slog.New(slog.DiscardHandler))
	if err != nil {
		return core.SnapshotMeta{}, 0, err
	}
	cr := &countingReader{r: src}
	meta, err = driver.RestoreBackup(cr, driver.RestoreTarget{
		Storage:      wal,
		Snapshots:    wal.Snapshots(),
		StateMachine: store,
		Membership:   core.Membership{Voters: cfg.PeerIDs()},
	})
	if err != nil {
		err = fmt.Errorf("%s: %w", file, err)
	}
	if cerr := store.Close(); cerr != nil && err == nil {
		err = fmt.Errorf("closing the key-value store: %w", cerr)
	}
	if cerr := wal.Close(); cerr != nil && err == nil {
		err = fmt.Errorf("closing the write-ahead log: %w", cerr)
	}
	if err != nil {
		return core.SnapshotMeta{}, 0, err
	}
	return meta, cr.n, nil
}

// checkEmptyDataDir refuses a data directory that holds anything (but
// lost+found): a restore seeds a new member, and must never mix a backup
// with a member's existing log or data. existed reports whether the
// directory was there at all.
func checkEmptyDataDir(dir string) (existed bool, err error) {
	entries, err := os.ReadDir(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("--%s: %v", flagDataDir, unwrapPathError(err))
	}
	var names []string
	for _, e := range entries {
		if e.Name() != lostFound {
			names = append(names, e.Name())
		}
	}
	if len(names) > 0 {
		return true, fmt.Errorf("--%s %s is not empty (it holds %s): a restore only seeds a new member; move it away or choose another directory",
			flagDataDir, dir, strings.Join(names, ", "))
	}
	return true, nil
}

// removeRestored undoes a failed restore: the directory was empty (or
// absent) before, so everything the restore created is its own.
func removeRestored(cfg *serveConfig, existed bool) {
	if !existed {
		_ = os.RemoveAll(cfg.DataDir)
		return
	}
	_ = os.RemoveAll(cfg.RaftDir())
	_ = os.RemoveAll(cfg.KVDir())
}
