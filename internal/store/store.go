// Package store is the on-disk layout of a node's object store: one file per
// sealed object in the store directory (under /dev/shm where it exists, so
// processes on the node share the pages). Writers write a temporary file and
// rename it into place, then tell the raylet (NodeService.SealObject); readers
// on the same node open the file directly.
package store

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"

	"os"
	"path/filepath"

	"github.com/goray/goray/internal/ids"
)

// BaseDir is where node store directories live: /dev/shm when it exists.
func BaseDir(fallback string) string {
	if st, err := os.Stat("/dev/shm"); err == nil && st.IsDir() {
		return filepath.Join("/dev/shm", fmt.Sprintf("goray-%d", os.Getuid()))
	}
	return fallback
}

// Path is the file of a sealed object.
func Path(dir string, id ids.ObjectID) string {
	return filepath.Join(dir, id.String())
}

// Create opens a new temporary file for object id in dir. Write the object
// into it, then call Commit.
func Create(dir string, id ids.ObjectID) (*os.File, error) {
	var r [6]byte
	_, _ = rand.Read(r[:])
	f, err := os.OpenFile(filepath.Join(dir, id.String()+".tmp-"+hex.EncodeToString(r[:])), os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o600)
	if err != nil {
		return nil, fmt.Errorf("object store: create %s: %w", id, err)
	}
	return f, nil
}

// Commit closes f and renames it to the object's sealed path.
func Commit(f *os.File, dir string, id ids.ObjectID) error {
	if err := f.Close(); err != nil {
		os.Remove(f.Name())
		return fmt.Errorf("object store: write %s: %w", id, err)
	}
	if err := os.Rename(f.Name(), Path(dir, id)); err != nil {
		os.Remove(f.Name())
		return fmt.Errorf("object store: seal %s: %w", id, err)
	}
	return nil
}

// Write stores data as object id in dir (temporary file, then rename).
func Write(dir string, id ids.ObjectID, data []byte) error {
	f, err := Create(dir, id)
	if err != nil {
		return err
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		os.Remove(f.Name())
		return fmt.Errorf("object store: write %s: %w", id, err)
	}
	return Commit(f, dir, id)
}

// Read returns the bytes of sealed object id in dir.
func Read(dir string, id ids.ObjectID) ([]byte, error) {
	b, err := os.ReadFile(Path(dir, id))
	if err != nil {
		return nil, fmt.Errorf("object store: read %s: %w", id, err)
	}
	return b, nil
}

// Remove deletes object id from dir; a missing object is not an error.
func Remove(dir string, id ids.ObjectID) error {
	if err := os.Remove(Path(dir, id)); err != nil && !os.IsNotExist(err) {
		return fmt.Errorf("object store: remove %s: %w", id, err)
	}
	return nil
}
