package files

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"hash/crc32"
	"io/fs"
	"os"
	"path/filepath"
	"syscall"

	"github.com/goray/goray/internal/errs"
)

// Disk is one raylet's replicas: a file per replica, named by its hash in
// hex, in <data dir>/files, and the files being written in
// <data dir>/files/.tmp (removed when a Disk opens: what is there is a
// write a crash interrupted). A replica is written under a temporary name
// and renamed into place once complete and synced, so a replica that
// exists is whole (its bytes can still rot: readers verify every block).
//
// Any goroutine calls it; it keeps no state of its own beyond the
// directory, and concurrent writers of one hash each rename a complete
// file of the same content into place.
type Disk struct {
	dir string
	tmp string
}

// OpenDisk opens (creating it) the file directory under dataDir.
func OpenDisk(dataDir string) (*Disk, error) {
	d := &Disk{dir: filepath.Join(dataDir, "files")}
	d.tmp = filepath.Join(d.dir, ".tmp")
	if err := os.RemoveAll(d.tmp); err != nil {
		return nil, fmt.Errorf("file store: clear %s: %w", d.tmp, err)
	}
	if err := os.MkdirAll(d.tmp, 0o700); err != nil {
		return nil, fmt.Errorf("file store: %w", err)
	}
	return d, nil
}

// Dir is the directory of the replicas.
func (d *Disk) Dir() string { return d.dir }

// Path is where the replica of h is.
func (d *Disk) Path(h Hash) string { return filepath.Join(d.dir, h.String()) }

// Size is the size of the local replica of h, if there is one.
func (d *Disk) Size(h Hash) (uint64, bool) {
	st, err := os.Stat(d.Path(h))
	if err != nil || !st.Mode().IsRegular() {
		return 0, false
	}
	return uint64(st.Size()), true
}

// Open opens the local replica of h; ErrNotFound when there is none.
func (d *Disk) Open(h Hash) (*os.File, error) {
	f, err := os.Open(d.Path(h))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, errs.New(errs.KindNotFound, h.String(), "this node holds no replica of file %s", h)
	}
	return f, err
}

// Remove removes the local replica of h; removing one that is not there
// does nothing.
func (d *Disk) Remove(h Hash) error {
	err := os.Remove(d.Path(h))
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	return err
}

// LocalFile is a replica found on disk.
type LocalFile struct {
	Hash Hash
	Size uint64
}

// List lists the replicas on disk.
func (d *Disk) List() ([]LocalFile, error) {
	ents, err := os.ReadDir(d.dir)
	if err != nil {
		return nil, err
	}
	var out []LocalFile
	for _, e := range ents {
		if !e.Type().IsRegular() || len(e.Name()) != 64 {
			continue
		}
		var h Hash
		if _, err := hex.Decode(h[:], []byte(e.Name())); err != nil {
			continue
		}
		info, err := e.Info()
		if err != nil {
			continue
		}
		out = append(out, LocalFile{Hash: h, Size: uint64(info.Size())})
	}
	return out, nil
}

// Writer writes a new replica: it checksums every block as the bytes go to
// a temporary file, and hashes the whole content (a put learns its address
// from it, a copy checks it against the address) in a goroutine of its own,
// beside the receiving and the writing. Commit puts it in place; Abort
// (always safe to call, and a no-op after Commit) removes it.
type Writer struct {
	d       *Disk
	f       *os.File
	n       uint64
	done    bool
	crc     uint32
	inBlock int
	blocks  []uint32
	flushed uint64 // bytes whose writeback was started
	// The chunks Write is given go to the hashing goroutine, which answers
	// on wholeOut once wholeIn is closed.
	finished bool
	wholeIn  chan []byte
	wholeOut chan Hash
	sum      Hash
}

// writebackChunk is how many written bytes start their writeback to disk
// at once (see startWriteback).
const writebackChunk = 8 << 20

// Create starts a replica.
func (d *Disk) Create() (*Writer, error) {
	f, err := os.CreateTemp(d.tmp, "put-")
	if err != nil {
		return nil, diskErr(d, 0, err)
	}
	in, out := make(chan []byte, 8), make(chan Hash, 1)
	w := &Writer{d: d, f: f, wholeIn: in, wholeOut: out}
	go func() { out <- hashAll(in) }()
	return w, nil
}

// hashAll is the SHA-256 of the chunks it reads, in order.
func hashAll(in <-chan []byte) Hash {
	h := sha256.New()
	for p := range in {
		h.Write(p)
	}
	var sum Hash
	h.Sum(sum[:0])
	return sum
}

// Write appends p. p is read after Write returns, until Sum or Abort: the
// caller must not change it (a gRPC message's data, which is never reused,
// is fine).
func (w *Writer) Write(p []byte) (int, error) {
	if w.n+uint64(len(p)) > MaxFileSize {
		return 0, errs.New(errs.KindInvalidArgument, "", "file too large: more than %d bytes (1 TiB), the file store's limit", uint64(MaxFileSize))
	}
	if _, err := w.f.Write(p); err != nil {
		return 0, diskErr(w.d, w.n, err)
	}
	w.n += uint64(len(p))
	if len(p) == 0 {
		return 0, nil
	}
	if w.n-w.flushed >= writebackChunk {
		startWriteback(w.f, int64(w.flushed), int64(w.n-w.flushed))
		w.flushed = w.n
	}
	w.wholeIn <- p
	for q := p; len(q) > 0; {
		take := min(len(q), BlockSize-w.inBlock)
		w.crc = crc32.Update(w.crc, castagnoli, q[:take])
		w.inBlock += take
		q = q[take:]
		if w.inBlock == BlockSize {
			w.blocks = append(w.blocks, w.crc)
			w.crc, w.inBlock = 0, 0
		}
	}
	return len(p), nil
}

// finish ends the hashing goroutine and keeps its result.
func (w *Writer) finish() {
	if w.finished {
		return
	}
	w.finished = true
	close(w.wholeIn)
	w.sum = <-w.wholeOut
}

// Size is the number of bytes written.
func (w *Writer) Size() uint64 { return w.n }

// Blocks is every block's checksum, once the last Write is done.
func (w *Writer) Blocks() []uint32 {
	if w.inBlock > 0 {
		w.blocks = append(w.blocks, w.crc)
		w.crc, w.inBlock = 0, 0
	}
	return w.blocks
}

// Sum is the SHA-256 of the whole content, once the last Write is done.
func (w *Writer) Sum() Hash {
	w.finish()
	return w.sum
}

// Commit syncs the file and renames it into place as the replica of h.
func (w *Writer) Commit(h Hash) error {
	if err := w.f.Sync(); err != nil {
		return diskErr(w.d, w.n, err)
	}
	if err := w.f.Close(); err != nil {
		return diskErr(w.d, w.n, err)
	}
	if err := os.Rename(w.f.Name(), w.d.Path(h)); err != nil {
		return diskErr(w.d, w.n, err)
	}
	w.done = true
	return nil
}

// Abort removes the partial file.
func (w *Writer) Abort() {
	if w.done {
		return
	}
	w.done = true
	w.finish()
	w.f.Close()
	os.Remove(w.f.Name())
}

// diskErr is a write error; a full disk says so and what to do.
func diskErr(d *Disk, written uint64, err error) error {
	if errors.Is(err, syscall.ENOSPC) || errors.Is(err, syscall.EDQUOT) {
		return errs.New(errs.KindObjectStoreFull, "", "the file store's disk is full (%s) after %d bytes of this file: the partial file was removed and stored files are intact; free space there or put through another node", d.dir, written)
	}
	return errs.New(errs.KindInternal, "", "file store %s: %v", d.dir, err)
}
