package scheduler

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/protobuf/proto"

	"github.com/goray/goray/internal/ids"
	pb "github.com/goray/goray/proto/goray/v1"
)

// ErrFenced is a write refused because the head that made it no longer
// leads: its term's fence (EtcdStoreConfig.Fence) failed.
var ErrFenced = errors.New("the head's write was refused: this head no longer leads the cluster")

// DefaultEtcdPrefix is where an EtcdStore keeps the head's tables.
const DefaultEtcdPrefix = "/goray/head/tables/"

// etcdWriteTimeout bounds one write to etcd.
const etcdWriteTimeout = 10 * time.Second

// EtcdStoreConfig configures an EtcdStore.
type EtcdStoreConfig struct {
	// Client is the head's etcd client. Required.
	Client *clientv3.Client
	// Prefix of the tables' keys; default DefaultEtcdPrefix.
	Prefix string
	// Fence, when set, is a comparison every write's transaction carries:
	// a head of several passes its term's (the election key's create
	// revision), so that a deposed leader's writes fail. A write the fence
	// refuses fails with ErrFenced, as does every later write.
	Fence *clientv3.Cmp
	// Logger; default slog.Default().
	Logger *slog.Logger
}

// EtcdStore is the head's Store (and FileIndexStore) in etcd: the tables of
// a head with a kept data dir (on its embedded etcd member) and of a
// cluster of several heads (on their shared etcd cluster). It loads every
// table when it opens and serves reads from memory; each Put writes its
// row in one etcd transaction (replicated to a majority of members and
// fsynced) before the in-memory copy changes, so what a read returns has
// been persisted, and a head that takes over finds every write the old one
// acknowledged. As BoltStore, it skips writing a node row whose only change
// is its available resources (raylets report them with every heartbeat).
//
// Rows: nodes and jobs as JSON (as BoltStore), actors and placement groups
// as their protobuf messages, files as JSON, names as the 32-byte hash,
// the next job number as 4 bytes big endian. Keys are
// <prefix><table>/<hex id> (names: the name itself).
//
// Safe for concurrent use.
type EtcdStore struct {
	cli    *clientv3.Client
	prefix string
	fence  *clientv3.Cmp
	log    *slog.Logger

	mu       sync.Mutex
	mem      *MemoryStore          // guarded by mu
	nodeKeys map[ids.NodeID][]byte // guarded by mu: each node's persisted form, without its available resources
	files    []*FileRecord         // the file index as loaded (LoadFiles)
	names    map[string][32]byte   // as loaded
	fenced   chan struct{}         // closed at the first refused write
	refused  bool                  // guarded by mu
}

var (
	_ Store          = (*EtcdStore)(nil)
	_ FileIndexStore = (*EtcdStore)(nil)
)

// Tables' key segments.
const (
	etcdNodes   = "nodes/"
	etcdJobs    = "jobs/"
	etcdActors  = "actors/"
	etcdPGs     = "placement_groups/"
	etcdFiles   = "files/"
	etcdNames   = "file_names/"
	etcdNextJob = "meta/next_job"
)

// OpenEtcdStore loads the tables under cfg.Prefix.
func OpenEtcdStore(ctx context.Context, cfg EtcdStoreConfig) (*EtcdStore, error) {
	if cfg.Client == nil {
		return nil, errors.New("scheduler store: an etcd client is required")
	}
	if cfg.Prefix == "" {
		cfg.Prefix = DefaultEtcdPrefix
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	s := &EtcdStore{cli: cfg.Client, prefix: cfg.Prefix, fence: cfg.Fence, log: cfg.Logger,
		mem: NewMemoryStore(), nodeKeys: map[ids.NodeID][]byte{}, names: map[string][32]byte{}, fenced: make(chan struct{})}
	if err := s.load(ctx); err != nil {
		return nil, fmt.Errorf("scheduler store: load the head's tables from etcd: %w", err)
	}
	return s, nil
}

// load reads every row, a page at a time.
func (s *EtcdStore) load(ctx context.Context) error {
	const page = 1000
	key, end := s.prefix, clientv3.GetPrefixRangeEnd(s.prefix)
	var rev int64
	for {
		opts := []clientv3.OpOption{clientv3.WithRange(end), clientv3.WithLimit(page)}
		if rev > 0 {
			opts = append(opts, clientv3.WithRev(rev)) // one consistent snapshot
		}
		resp, err := s.cli.Get(ctx, key, opts...)
		if err != nil {
			return err
		}
		rev = resp.Header.Revision
		for _, kv := range resp.Kvs {
			if err := s.loadRow(strings.TrimPrefix(string(kv.Key), s.prefix), kv.Value); err != nil {
				return fmt.Errorf("row %s: %w", kv.Key, err)
			}
		}
		if !resp.More || len(resp.Kvs) == 0 {
			return nil
		}
		key = string(resp.Kvs[len(resp.Kvs)-1].Key) + "\x00"
	}
}

func (s *EtcdStore) loadRow(k string, v []byte) error {
	switch {
	case strings.HasPrefix(k, etcdNodes):
		n, err := decodeNode(v)
		if err != nil {
			return err
		}
		s.nodeKeys[n.ID] = nodeKey(n)
		return s.mem.PutNode(n)
	case strings.HasPrefix(k, etcdJobs):
		j, err := decodeJob(v)
		if err != nil {
			return err
		}
		return s.mem.PutJob(j)
	case strings.HasPrefix(k, etcdActors):
		a := new(pb.ActorInfo)
		if err := proto.Unmarshal(v, a); err != nil {
			return err
		}
		return s.mem.PutActor(a)
	case strings.HasPrefix(k, etcdPGs):
		pg := new(pb.PlacementGroupInfo)
		if err := proto.Unmarshal(v, pg); err != nil {
			return err
		}
		return s.mem.PutPlacementGroup(pg)
	case strings.HasPrefix(k, etcdFiles):
		f, err := decodeFile(v)
		if err != nil {
			return err
		}
		s.files = append(s.files, f)
	case strings.HasPrefix(k, etcdNames):
		if len(v) != 32 {
			return fmt.Errorf("a hash of %d bytes", len(v))
		}
		s.names[strings.TrimPrefix(k, etcdNames)] = [32]byte(v)
	case k == etcdNextJob:
		if len(v) != 4 {
			return fmt.Errorf("a next job number of %d bytes", len(v))
		}
		return s.mem.PutNextJob(binary.BigEndian.Uint32(v))
	}
	return nil // a row of a later version: left alone
}

// Fenced is closed when the fence first refused a write.
func (s *EtcdStore) Fenced() <-chan struct{} { return s.fenced }

// Close releases nothing: the client belongs to the caller. Writes in
// flight have returned by the time their Put does.
func (s *EtcdStore) Close() error { return nil }

// write runs ops in one transaction, under the fence.
func (s *EtcdStore) write(ops ...clientv3.Op) error {
	s.mu.Lock()
	refused := s.refused
	s.mu.Unlock()
	if refused {
		return ErrFenced
	}
	ctx, cancel := context.WithTimeout(context.Background(), etcdWriteTimeout)
	defer cancel()
	txn := s.cli.Txn(ctx)
	if s.fence != nil {
		txn = txn.If(*s.fence)
	}
	resp, err := txn.Then(ops...).Commit()
	if err != nil {
		return fmt.Errorf("write the head's tables to etcd: %w", err)
	}
	if !resp.Succeeded {
		s.mu.Lock()
		if !s.refused {
			s.refused = true
			close(s.fenced)
		}
		s.mu.Unlock()
		return ErrFenced
	}
	return nil
}

func (s *EtcdStore) key(table string, id []byte) string {
	return s.prefix + table + hex.EncodeToString(id)
}

func (s *EtcdStore) PutNode(n *NodeRecord) error {
	key := nodeKey(n)
	s.mu.Lock()
	same := bytes.Equal(key, s.nodeKeys[n.ID])
	s.mu.Unlock()
	if !same {
		v, err := encodeNode(n)
		if err != nil {
			return err
		}
		if err := s.write(clientv3.OpPut(s.key(etcdNodes, n.ID[:]), string(v))); err != nil {
			return err
		}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.nodeKeys[n.ID] = key
	return s.mem.PutNode(n)
}

func (s *EtcdStore) GetNode(id ids.NodeID) (*NodeRecord, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.mem.GetNode(id)
}

func (s *EtcdStore) ListNodes() []*NodeRecord {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.mem.ListNodes()
}

func (s *EtcdStore) PutJob(j *JobRecord) error {
	v, err := encodeJob(j)
	if err != nil {
		return err
	}
	if err := s.write(clientv3.OpPut(s.key(etcdJobs, j.ID[:]), string(v))); err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.mem.PutJob(j)
}

func (s *EtcdStore) GetJob(id ids.JobID) (*JobRecord, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.mem.GetJob(id)
}

func (s *EtcdStore) ListJobs() []*JobRecord {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.mem.ListJobs()
}

func (s *EtcdStore) PutActor(a *pb.ActorInfo) error {
	id, err := ids.ParseActorID(a.GetSpec().GetActorId())
	if err != nil {
		return err
	}
	v, err := proto.MarshalOptions{Deterministic: true}.Marshal(a)
	if err != nil {
		return err
	}
	if err := s.write(clientv3.OpPut(s.key(etcdActors, id[:]), string(v))); err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.mem.PutActor(a)
}

func (s *EtcdStore) GetActor(id ids.ActorID) (*pb.ActorInfo, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.mem.GetActor(id)
}

func (s *EtcdStore) ListActors() []*pb.ActorInfo {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.mem.ListActors()
}

func (s *EtcdStore) PutPlacementGroup(pg *pb.PlacementGroupInfo) error {
	id, err := ids.ParsePlacementGroupID(pg.GetPlacementGroupId())
	if err != nil {
		return err
	}
	v, err := proto.MarshalOptions{Deterministic: true}.Marshal(pg)
	if err != nil {
		return err
	}
	if err := s.write(clientv3.OpPut(s.key(etcdPGs, id[:]), string(v))); err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.mem.PutPlacementGroup(pg)
}

func (s *EtcdStore) ListPlacementGroups() []*pb.PlacementGroupInfo {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.mem.ListPlacementGroups()
}

func (s *EtcdStore) PutNextJob(n uint32) error {
	if err := s.write(clientv3.OpPut(s.prefix+etcdNextJob, string(binary.BigEndian.AppendUint32(nil, n)))); err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.mem.PutNextJob(n)
}

func (s *EtcdStore) NextJob() uint32 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.mem.NextJob()
}

// LoadFiles returns the file index as loaded at open.
func (s *EtcdStore) LoadFiles() ([]*FileRecord, map[string][32]byte, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	names := make(map[string][32]byte, len(s.names))
	for k, v := range s.names {
		names[k] = v
	}
	return append([]*FileRecord(nil), s.files...), names, nil
}

func (s *EtcdStore) PutFileRecord(f *FileRecord) error {
	v, err := encodeFile(f)
	if err != nil {
		return err
	}
	return s.write(clientv3.OpPut(s.key(etcdFiles, f.Hash[:]), string(v)))
}

func (s *EtcdStore) DeleteFileRecord(h [32]byte) error {
	return s.write(clientv3.OpDelete(s.key(etcdFiles, h[:])))
}

func (s *EtcdStore) PutFileName(name string, h [32]byte) error {
	return s.write(clientv3.OpPut(s.prefix+etcdNames+name, string(h[:])))
}

func (s *EtcdStore) DeleteFileName(name string) error {
	return s.write(clientv3.OpDelete(s.prefix + etcdNames + name))
}
