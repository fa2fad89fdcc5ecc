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
	"sync/atomic"
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

// Writer writes a new replica in a pipeline beside its caller: Write hands
// each chunk to two goroutines, one writing it to a temporary file (starting
// its writeback as it goes) and checksumming every block, the other hashing
// the whole content (a put learns its address from it, a copy checks it
// against the address). So the caller receives the next chunk while the
// last is written and hashed, and the two use both cores. Commit puts it in
// place; Abort (always safe to call, and a no-op after Commit) removes it.
// One goroutine at a time calls it.
type Writer struct {
	d *Disk
	f *os.File
	// direct is f opened again with O_DIRECT (nil where the file system
	// does not take it): chunks aligned in memory, length and offset (a
	// put's 1 MiB chunks) are written with it, the rest with f.
	direct *os.File
	n      uint64 // bytes given to Write
	done   bool

	// The chunks Write is given go to the writing goroutine (fileIn), which
	// answers on fileOut once fileIn is closed, and to the hashing one
	// (wholeIn, wholeOut).
	finished bool
	fileIn   chan []byte
	fileOut  chan fileResult
	wholeIn  chan []byte
	wholeOut chan Hash
	failed   atomic.Bool // the writing goroutine hit an error: Write stops early
	res      fileResult
	sum      Hash
}

// fileResult is what the writing goroutine did.
type fileResult struct {
	written uint64
	blocks  []uint32
	err     error
}

// writebackChunk is how many written bytes start their writeback to disk
// at once (see startWriteback).
const writebackChunk = 8 << 20

// pipelineDepth is how many chunks (1 MiB each from a put) may wait for
// each of the writing and hashing goroutines.
const pipelineDepth = 8

// Create starts a replica.
func (d *Disk) Create() (*Writer, error) {
	f, err := os.CreateTemp(d.tmp, "put-")
	if err != nil {
		return nil, diskErr(d, 0, err)
	}
	w := &Writer{d: d, f: f, direct: openDirect(f.Name()),
		fileIn: make(chan []byte, pipelineDepth), fileOut: make(chan fileResult, 1),
		wholeIn: make(chan []byte, pipelineDepth), wholeOut: make(chan Hash, 1)}
	go func() { w.wholeOut <- hashAll(w.wholeIn) }()
	go func() { w.fileOut <- w.writeAll() }()
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

// writeAll writes the chunks of fileIn to the file in order, checksumming
// every block; after an error it only drains fileIn.
func (w *Writer) writeAll() fileResult {
	var (
		r       fileResult
		crc     uint32
		inBlock int
		flushed uint64
	)
	for p := range w.fileIn {
		if r.err != nil {
			continue
		}
		var err error
		if w.direct != nil && directOK(p, r.written) {
			_, err = w.direct.WriteAt(p, int64(r.written))
			flushed = r.written + uint64(len(p)) // on the device already
		} else {
			_, err = w.f.WriteAt(p, int64(r.written))
		}
		if err != nil {
			r.err = diskErr(w.d, r.written, err)
			w.failed.Store(true)
			continue
		}
		r.written += uint64(len(p))
		if r.written-flushed >= writebackChunk {
			startWriteback(w.f, int64(flushed), int64(r.written-flushed))
			flushed = r.written
		}
		for q := p; len(q) > 0; {
			take := min(len(q), BlockSize-inBlock)
			crc = crc32.Update(crc, castagnoli, q[:take])
			inBlock += take
			q = q[take:]
			if inBlock == BlockSize {
				r.blocks = append(r.blocks, crc)
				crc, inBlock = 0, 0
			}
		}
	}
	if inBlock > 0 {
		r.blocks = append(r.blocks, crc)
	}
	return r
}

// Write appends p. p is read after Write returns, until Sum, Blocks,
// Commit or Abort: the caller must not change it (a gRPC message's data,
// which is never reused, is fine). A failed write to disk is returned by a
// later Write or by Commit.
func (w *Writer) Write(p []byte) (int, error) {
	if w.finished {
		return 0, errs.New(errs.KindInternal, "", "file store: write after the end of the file")
	}
	if w.n+uint64(len(p)) > MaxFileSize {
		return 0, errs.New(errs.KindInvalidArgument, "", "file too large: more than %d bytes (1 TiB), the file store's limit", uint64(MaxFileSize))
	}
	if w.failed.Load() {
		w.finish()
		return 0, w.res.err
	}
	if len(p) == 0 {
		return 0, nil
	}
	w.n += uint64(len(p))
	w.fileIn <- p
	w.wholeIn <- p
	return len(p), nil
}

// finish ends the two goroutines and keeps their results.
func (w *Writer) finish() {
	if w.finished {
		return
	}
	w.finished = true
	close(w.fileIn)
	close(w.wholeIn)
	w.res = <-w.fileOut
	w.sum = <-w.wholeOut
}

// Size is the number of bytes written.
func (w *Writer) Size() uint64 { return w.n }

// Blocks is every block's checksum; it ends the file (no Write after it).
func (w *Writer) Blocks() []uint32 {
	w.finish()
	return w.res.blocks
}

// Sum is the SHA-256 of the whole content; it ends the file (no Write
// after it).
func (w *Writer) Sum() Hash {
	w.finish()
	return w.sum
}

// Commit syncs the file and renames it into place as the replica of h.
func (w *Writer) Commit(h Hash) error {
	w.finish()
	if w.res.err != nil {
		return w.res.err
	}
	// The direct writes are on the device, but its cache and the file's
	// metadata (its size, its blocks) are not synced until this fsync.
	if err := w.f.Sync(); err != nil {
		return diskErr(w.d, w.n, err)
	}
	if w.direct != nil {
		w.direct.Close()
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
	if w.direct != nil {
		w.direct.Close()
	}
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
