package main

import (
	"crypto/rand"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"time"
)

// identityFile is the name, under the data directory, of the file that
// says whose data it is: which cluster, which member. It is written once
// the node knows its ID (bootstrap, or the answer to a join) and before
// the Raft node starts, so a data directory with Raft state always has
// one (except directories from before it existed, see loadOrAdopt).
const identityFile = "identity.json"

// identityFormat is the version of the file's contents.
const identityFormat = 1

// maxIdentityBytes bounds the file read: it is a few hundred bytes.
const maxIdentityBytes = 64 << 10

// identity is the data directory's owner.
type identity struct {
	Format int `json:"format"`
	// ClusterName is --cluster-id as typed; ClusterID its hash.
	ClusterName string `json:"cluster_name"`
	ClusterID   uint64 `json:"cluster_id"`
	// NodeID is this member's Raft ID: ordinal+1 or --id for an initial
	// member, allocated by the leader for one that joined; 0 while a join
	// is under way (Incarnation is then set, so that a retry after a
	// crash is recognised as the same node).
	NodeID uint64 `json:"node_id"`
	Name   string `json:"name,omitempty"`
	// Incarnation is drawn once for an empty data directory that joins;
	// 0 for an initial member.
	Incarnation uint64 `json:"incarnation,omitempty"`
	// Removed is set when the node learns it was removed from the
	// cluster: on its next start it moves this data aside and joins anew.
	Removed bool `json:"removed,omitempty"`
	// Written is when the file was last written (for operators).
	Written time.Time `json:"written"`
}

// errForeignCluster is wrapped by the error of a data directory that
// belongs to another cluster.
var errForeignCluster = errors.New("data directory belongs to another cluster")

// readIdentity reads dir's identity file; (nil, nil) when there is none.
func readIdentity(dir string) (*identity, error) {
	path := filepath.Join(dir, identityFile)
	f, err := os.Open(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("reading the identity file: %v", unwrapPathError(err))
	}
	defer f.Close()
	var id identity
	dec := json.NewDecoder(&limitedReader{r: f, n: maxIdentityBytes})
	if err := dec.Decode(&id); err != nil {
		return nil, fmt.Errorf("identity file %s is damaged (%v); it says which cluster and member this data belongs to: restore it or move the data directory aside", path, err)
	}
	if id.Format != identityFormat {
		return nil, fmt.Errorf("identity file %s has format %d; this kvnode reads format %d", path, id.Format, identityFormat)
	}
	if (id.NodeID == 0 && id.Incarnation == 0) || id.ClusterID == 0 {
		return nil, fmt.Errorf("identity file %s has no node or cluster ID", path)
	}
	return &id, nil
}

// limitedReader fails past n bytes instead of truncating silently.
type limitedReader struct {
	r interface{ Read([]byte) (int, error) }
	n int64
}

func (l *limitedReader) Read(p []byte) (int, error) {
	if l.n <= 0 {
		return 0, fmt.Errorf("over %d bytes", maxIdentityBytes)
	}
	if int64(len(p)) > l.n {
		p = p[:l.n]
	}
	n, err := l.r.Read(p)
	l.n -= int64(n)
	return n, err
}

// abandonedJoin reports whether id records only a join to another
// cluster than clusterID that never got an ID: the identity is written
// before the join is asked and the driver starts only once an ID is
// known, so such a data directory holds no Raft state of that cluster.
func (id *identity) abandonedJoin(clusterID uint64) bool {
	return id.NodeID == 0 && id.ClusterID != clusterID && !id.Removed
}

// checkCluster refuses an identity of another cluster, in one line.
func (id *identity) checkCluster(dir, name string, clusterID uint64) error {
	if id.ClusterID == clusterID {
		return nil
	}
	return fmt.Errorf("%w: %s holds member %d of cluster %q, not of --%s %q; point --%s at this cluster's data, or move it aside to start afresh",
		errForeignCluster, dir, id.NodeID, id.ClusterName, flagClusterID, name, flagDataDir)
}

// writeIdentity writes id to dir atomically: a temporary file, fsync,
// rename over the old one, fsync of the directory. A crash leaves the
// old file or the new one, never a mix or nothing.
func writeIdentity(dir string, id identity) error {
	id.Format = identityFormat
	id.Written = time.Now().UTC().Truncate(time.Second)
	data, err := json.MarshalIndent(id, "", "  ")
	if err != nil {
		return err
	}
	data = append(data, '\n')
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("writing the identity file: %v", unwrapPathError(err))
	}
	path := filepath.Join(dir, identityFile)
	tmp := path + ".tmp"
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return fmt.Errorf("writing the identity file: %v", unwrapPathError(err))
	}
	if _, err := f.Write(data); err != nil {
		_ = f.Close()
		_ = os.Remove(tmp)
		return fmt.Errorf("writing the identity file: %v", err)
	}
	if err := f.Sync(); err != nil {
		_ = f.Close()
		_ = os.Remove(tmp)
		return fmt.Errorf("syncing the identity file: %v", err)
	}
	if err := f.Close(); err != nil {
		_ = os.Remove(tmp)
		return fmt.Errorf("writing the identity file: %v", err)
	}
	if err := os.Rename(tmp, path); err != nil {
		_ = os.Remove(tmp)
		return fmt.Errorf("writing the identity file: %v", unwrapPathError(err))
	}
	return syncDir(dir)
}

// newIncarnation draws a random non-zero incarnation for a joining data
// directory.
func newIncarnation() (uint64, error) {
	var b [8]byte
	if _, err := rand.Read(b[:]); err != nil {
		return 0, fmt.Errorf("drawing an incarnation: %v", err)
	}
	if v := binary.LittleEndian.Uint64(b[:]); v != 0 {
		return v, nil
	}
	return 1, nil
}

// moveAside renames a removed member's data directory contents to
// DATA_DIR/removed-<id>-<unix time>, never deleting anything: the
// operator may want them (a backup, a post-mortem). The directory itself
// stays (it may be a volume's mount point).
func moveAside(dir string, id uint64, now time.Time) (string, error) {
	dest := filepath.Join(dir, fmt.Sprintf("removed-%d-%d", id, now.Unix()))
	if err := os.Mkdir(dest, 0o700); err != nil {
		return "", fmt.Errorf("moving removed member %d's data aside: %v", id, unwrapPathError(err))
	}
	ents, err := os.ReadDir(dir)
	if err != nil {
		return "", fmt.Errorf("moving removed member %d's data aside: %v", id, unwrapPathError(err))
	}
	for _, e := range ents {
		name := e.Name()
		if name == filepath.Base(dest) || name == lostFound || isRemovedDir(name) {
			continue
		}
		if err := os.Rename(filepath.Join(dir, name), filepath.Join(dest, name)); err != nil {
			return "", fmt.Errorf("moving removed member %d's data aside: %v", id, unwrapPathError(err))
		}
	}
	if err := syncDir(dest); err != nil {
		return "", err
	}
	return dest, syncDir(dir)
}

// isRemovedDir reports whether name is a directory moveAside made.
func isRemovedDir(name string) bool {
	var id, t uint64
	n, err := fmt.Sscanf(name, "removed-%d-%d", &id, &t)
	return err == nil && n == 2
}
