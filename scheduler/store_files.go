package scheduler

import (
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"maps"
	"slices"
	"sync"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/goray/goray/internal/ids"
)

// FileRecord is one row of the file index: a file of the file store.
type FileRecord struct {
	Hash      [32]byte
	Size      uint64
	BlockSize uint32
	// Blocks are the CRC-32C of each block.
	Blocks []uint32
	// Wanted is the replica count asked for.
	Wanted uint32
	// Nodes hold a replica (dead nodes are removed when declared dead).
	Nodes   []ids.NodeID
	Created time.Time
}

func (f *FileRecord) clone() *FileRecord {
	c := *f
	c.Blocks = slices.Clone(f.Blocks)
	c.Nodes = slices.Clone(f.Nodes)
	return &c
}

// FileIndexStore persists the file index (files by hash, and names). A
// Store that implements it keeps the index across head restarts; the head
// keeps the index in memory only otherwise. The file manager calls it under
// its own lock, so an implementation need not be safe for concurrent use,
// but it must not share state with the Store's other tables (those are
// called under another lock).
type FileIndexStore interface {
	// LoadFiles returns every stored file and name.
	LoadFiles() ([]*FileRecord, map[string][32]byte, error)
	PutFileRecord(f *FileRecord) error
	DeleteFileRecord(h [32]byte) error
	PutFileName(name string, h [32]byte) error
	DeleteFileName(name string) error
}

var (
	_ FileIndexStore = (*MemoryStore)(nil)
	_ FileIndexStore = (*BoltStore)(nil)
)

// memFileIndex is a MemoryStore's file index.
type memFileIndex struct {
	mu    sync.Mutex
	files map[[32]byte]*FileRecord
	names map[string][32]byte
}

func (m *memFileIndex) init() {
	if m.files == nil {
		m.files, m.names = map[[32]byte]*FileRecord{}, map[string][32]byte{}
	}
}

func (m *MemoryStore) LoadFiles() ([]*FileRecord, map[string][32]byte, error) {
	f := &m.fileIdx
	f.mu.Lock()
	defer f.mu.Unlock()
	f.init()
	var out []*FileRecord
	for _, r := range f.files {
		out = append(out, r.clone())
	}
	return out, maps.Clone(f.names), nil
}

func (m *MemoryStore) PutFileRecord(r *FileRecord) error {
	f := &m.fileIdx
	f.mu.Lock()
	defer f.mu.Unlock()
	f.init()
	f.files[r.Hash] = r.clone()
	return nil
}

func (m *MemoryStore) DeleteFileRecord(h [32]byte) error {
	f := &m.fileIdx
	f.mu.Lock()
	defer f.mu.Unlock()
	f.init()
	delete(f.files, h)
	return nil
}

func (m *MemoryStore) PutFileName(name string, h [32]byte) error {
	f := &m.fileIdx
	f.mu.Lock()
	defer f.mu.Unlock()
	f.init()
	f.names[name] = h
	return nil
}

func (m *MemoryStore) DeleteFileName(name string) error {
	f := &m.fileIdx
	f.mu.Lock()
	defer f.mu.Unlock()
	f.init()
	delete(f.names, name)
	return nil
}

// Buckets of the file index in a BoltStore's file, made when the file
// manager first loads them.
var (
	bucketFiles     = []byte("files")
	bucketFileNames = []byte("file_names")
)

// storedFile is a FileRecord as stored (JSON; the block checksums as one
// byte string, 4 big-endian bytes each).
type storedFile struct {
	Hash      string    `json:"hash"`
	Size      uint64    `json:"size"`
	BlockSize uint32    `json:"block_size"`
	Blocks    []byte    `json:"blocks"`
	Wanted    uint32    `json:"wanted"`
	Nodes     []string  `json:"nodes"`
	Created   time.Time `json:"created"`
}

func encodeFile(f *FileRecord) ([]byte, error) {
	s := storedFile{Hash: hex.EncodeToString(f.Hash[:]), Size: f.Size, BlockSize: f.BlockSize, Wanted: f.Wanted, Created: f.Created}
	for _, b := range f.Blocks {
		s.Blocks = binary.BigEndian.AppendUint32(s.Blocks, b)
	}
	for _, n := range f.Nodes {
		s.Nodes = append(s.Nodes, n.String())
	}
	return json.Marshal(s)
}

func decodeFile(b []byte) (*FileRecord, error) {
	var s storedFile
	if err := json.Unmarshal(b, &s); err != nil {
		return nil, err
	}
	f := &FileRecord{Size: s.Size, BlockSize: s.BlockSize, Wanted: s.Wanted, Created: s.Created}
	if h, err := hex.DecodeString(s.Hash); err != nil || len(h) != 32 {
		return nil, fmt.Errorf("bad hash %q", s.Hash)
	} else {
		copy(f.Hash[:], h)
	}
	if len(s.Blocks)%4 != 0 {
		return nil, fmt.Errorf("block checksums of %d bytes", len(s.Blocks))
	}
	for i := 0; i < len(s.Blocks); i += 4 {
		f.Blocks = append(f.Blocks, binary.BigEndian.Uint32(s.Blocks[i:]))
	}
	for _, n := range s.Nodes {
		raw, err := hex.DecodeString(n)
		if err != nil {
			return nil, err
		}
		id, err := ids.ParseNodeID(raw)
		if err != nil {
			return nil, err
		}
		f.Nodes = append(f.Nodes, id)
	}
	return f, nil
}

func (s *BoltStore) LoadFiles() ([]*FileRecord, map[string][32]byte, error) {
	var out []*FileRecord
	names := map[string][32]byte{}
	err := s.db.Update(func(tx *bolt.Tx) error {
		fb, err := tx.CreateBucketIfNotExists(bucketFiles)
		if err != nil {
			return err
		}
		nb, err := tx.CreateBucketIfNotExists(bucketFileNames)
		if err != nil {
			return err
		}
		if err := fb.ForEach(func(k, v []byte) error {
			f, err := decodeFile(v)
			if err != nil {
				return fmt.Errorf("file %x: %w", k, err)
			}
			out = append(out, f)
			return nil
		}); err != nil {
			return err
		}
		return nb.ForEach(func(k, v []byte) error {
			if len(v) != 32 {
				return fmt.Errorf("file name %q: hash of %d bytes", k, len(v))
			}
			names[string(k)] = [32]byte(v)
			return nil
		})
	})
	return out, names, err
}

func (s *BoltStore) PutFileRecord(f *FileRecord) error {
	v, err := encodeFile(f)
	if err != nil {
		return err
	}
	return s.put(bucketFiles, f.Hash[:], v)
}

func (s *BoltStore) DeleteFileRecord(h [32]byte) error {
	return s.db.Update(func(tx *bolt.Tx) error { return tx.Bucket(bucketFiles).Delete(h[:]) })
}

func (s *BoltStore) PutFileName(name string, h [32]byte) error {
	return s.put(bucketFileNames, []byte(name), h[:])
}

func (s *BoltStore) DeleteFileName(name string) error {
	return s.db.Update(func(tx *bolt.Tx) error { return tx.Bucket(bucketFileNames).Delete([]byte(name)) })
}
