package scheduler

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// BinaryMirror keeps the job binaries where every head of a cluster of
// several can reach them, so that a head that takes over serves the
// binaries uploaded to the one before it. The head writes each binary to
// its data dir first and to the mirror before it acknowledges the upload;
// a fetch of a binary the head lacks on disk loads it from the mirror.
type BinaryMirror interface {
	// Has reports whether the mirror holds the binary with SHA-256 h.
	Has(ctx context.Context, h [32]byte) (bool, error)
	// Save copies the binary at path (already checked against h) in.
	Save(ctx context.Context, h [32]byte, path string) error
	// Load writes the binary h to the file dst (checked against h); false
	// when the mirror does not hold it.
	Load(ctx context.Context, h [32]byte, dst string) (bool, error)
}

// EtcdBinaries is a BinaryMirror in etcd: a binary is its chunks of
// binaryMirrorChunk bytes under <Prefix><sha hex>/<index>, and a size key
// <Prefix><sha hex>/size written after the last chunk, so a binary whose
// upload died half way is never seen. Binaries are kept for the cluster's
// life (etcd's space quota bounds them: 2 GiB by default).
type EtcdBinaries struct {
	Client *clientv3.Client
	// Prefix; default "/goray/head/binaries/".
	Prefix string
}

// binaryMirrorChunk fits one etcd request (its limit is 1.5 MiB).
const binaryMirrorChunk = 1 << 20

func (b *EtcdBinaries) prefix(h [32]byte) string {
	p := b.Prefix
	if p == "" {
		p = "/goray/head/binaries/"
	}
	return p + hex.EncodeToString(h[:]) + "/"
}

func chunkKey(prefix string, i int) string { return fmt.Sprintf("%s%08d", prefix, i) }

// Has reports whether the binary's size key exists.
func (b *EtcdBinaries) Has(ctx context.Context, h [32]byte) (bool, error) {
	resp, err := b.Client.Get(ctx, b.prefix(h)+"size", clientv3.WithCountOnly())
	if err != nil {
		return false, fmt.Errorf("job binary mirror: %w", err)
	}
	return resp.Count > 0, nil
}

// Save writes the chunks, then the size.
func (b *EtcdBinaries) Save(ctx context.Context, h [32]byte, path string) error {
	if ok, err := b.Has(ctx, h); err != nil || ok {
		return err
	}
	f, err := os.Open(path)
	if err != nil {
		return fmt.Errorf("job binary mirror: %w", err)
	}
	defer f.Close()
	p := b.prefix(h)
	buf := make([]byte, binaryMirrorChunk)
	var size int64
	for i := 0; ; i++ {
		n, err := io.ReadFull(f, buf)
		if n > 0 {
			if _, perr := b.Client.Put(ctx, chunkKey(p, i), string(buf[:n])); perr != nil {
				return fmt.Errorf("job binary mirror: write chunk %d of %x: %w", i, h, perr)
			}
			size += int64(n)
		}
		if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
			break
		}
		if err != nil {
			return fmt.Errorf("job binary mirror: read %s: %w", path, err)
		}
	}
	if _, err := b.Client.Put(ctx, p+"size", strconv.FormatInt(size, 10)); err != nil {
		return fmt.Errorf("job binary mirror: %w", err)
	}
	return nil
}

// Load copies the chunks to a temporary file beside dst, checks the hash
// and renames it into place.
func (b *EtcdBinaries) Load(ctx context.Context, h [32]byte, dst string) (bool, error) {
	p := b.prefix(h)
	resp, err := b.Client.Get(ctx, p+"size")
	if err != nil {
		return false, fmt.Errorf("job binary mirror: %w", err)
	}
	if len(resp.Kvs) == 0 {
		return false, nil
	}
	size, err := strconv.ParseInt(string(resp.Kvs[0].Value), 10, 64)
	if err != nil {
		return false, fmt.Errorf("job binary mirror: size of %x: %w", h, err)
	}
	f, err := os.CreateTemp(filepath.Dir(dst), ".mirror-*")
	if err != nil {
		return false, fmt.Errorf("job binary mirror: %w", err)
	}
	tmp := f.Name()
	defer func() {
		f.Close()
		os.Remove(tmp)
	}()
	hash := sha256.New()
	var got int64
	for i := 0; got < size; i++ {
		c, err := b.Client.Get(ctx, chunkKey(p, i))
		if err != nil {
			return false, fmt.Errorf("job binary mirror: read chunk %d of %x: %w", i, h, err)
		}
		if len(c.Kvs) == 0 {
			return false, fmt.Errorf("job binary mirror: chunk %d of %x is missing", i, h)
		}
		v := c.Kvs[0].Value
		if _, err := io.MultiWriter(f, hash).Write(v); err != nil {
			return false, fmt.Errorf("job binary mirror: %w", err)
		}
		got += int64(len(v))
	}
	var sum [32]byte
	hash.Sum(sum[:0])
	if got != size || !bytes.Equal(sum[:], h[:]) {
		return false, fmt.Errorf("job binary mirror: the binary %x read back as %d bytes hashing to %x", h, got, sum)
	}
	if err := f.Sync(); err != nil {
		return false, err
	}
	if err := f.Close(); err != nil {
		return false, err
	}
	if err := os.Rename(tmp, dst); err != nil {
		return false, fmt.Errorf("job binary mirror: %w", err)
	}
	return true, nil
}
