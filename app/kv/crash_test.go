package kv

import (
	"fmt"
	"math/rand/v2"
	"testing"

	"github.com/cockroachdb/pebble/v2/vfs"

	"github.com/rafty-db/rafty/app/kv/kvpb"
)

// TestCrashKeepsWhatSyncPromised simulates power loss with Pebble's
// crashable in-memory file system: the clone keeps what was synced and,
// in the random variants, a random part of what was not. After "reboot",
// the store must (1) hold at least the index Sync returned, and (2) be
// exactly the effects of commands 1..Applied(), nothing more, nothing
// less: the applied index and the effects were written atomically.
func TestCrashKeepsWhatSyncPromised(t *testing.T) {
	for _, disableWAL := range []bool{false, true} {
		for _, unsynced := range []int{0, 50, 100} {
			t.Run(fmt.Sprintf("disableWAL=%v/unsynced=%d%%", disableWAL, unsynced), func(t *testing.T) {
				fs := vfs.NewCrashableMem()
				opts := Options{FS: fs, DisableWAL: disableWAL, MemTableSize: 1 << 20}
				s, err := OpenStore("/kv", opts)
				if err != nil {
					t.Fatal(err)
				}
				defer s.Close()
				// Command i puts key i; the first half is synced.
				applyRange := func(from, to int) {
					for i := from; i <= to; i += 10 {
						var cmds []*kvpb.Command
						for j := i; j < i+10 && j <= to; j++ {
							cmds = append(cmds, putCmd(fmt.Sprintf("k%06d", j), fmt.Sprintf("v%d", j)))
						}
						apply(t, s, uint64(i), cmds...)
					}
				}
				applyRange(1, 500)
				durable, err := s.Sync()
				if err != nil {
					t.Fatalf("Sync: %v", err)
				}
				if durable != 500 {
					t.Fatalf("Sync returned %d, want 500", durable)
				}
				applyRange(501, 1000)

				crashed := fs.CrashClone(vfs.CrashCloneCfg{
					UnsyncedDataPercent: unsynced,
					RNG:                 rand.New(rand.NewPCG(1, uint64(unsynced))),
				})
				opts.FS = crashed
				r, err := OpenStore("/kv", opts)
				if err != nil {
					t.Fatalf("reopening after crash: %v", err)
				}
				defer r.Close()
				applied := mustApplied(t, r)
				if applied < durable || applied > 1000 {
					t.Fatalf("applied %d after crash, Sync promised %d", applied, durable)
				}
				got := dump(t, r)
				if len(got) != int(applied) {
					t.Fatalf("%d keys for applied index %d", len(got), applied)
				}
				for i := 1; i <= int(applied); i++ {
					if e := got[fmt.Sprintf("k%06d", i)]; e != (entry{fmt.Sprintf("v%d", i), uint64(i)}) {
						t.Fatalf("key %d: %v", i, e)
					}
				}
				// The driver re-delivers the rest; it applies normally.
				applyRangeTo := func(s *Store, from, to int) {
					for i := from; i <= to; i++ {
						apply(t, s, uint64(i), putCmd(fmt.Sprintf("k%06d", i), fmt.Sprintf("v%d", i)))
					}
				}
				applyRangeTo(r, int(applied)+1, 1000)
				if n := len(dump(t, r)); n != 1000 {
					t.Fatalf("%d keys after replay", n)
				}
			})
		}
	}
}
