package scheduler

import (
	"bytes"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	bolt "go.etcd.io/bbolt"
	"google.golang.org/protobuf/proto"

	"github.com/goray/goray/internal/ids"
	"github.com/goray/goray/internal/sched"
	pb "github.com/goray/goray/proto/goray/v1"
)

// Buckets of a BoltStore's file.
var (
	bucketNodes  = []byte("nodes")
	bucketJobs   = []byte("jobs")
	bucketActors = []byte("actors")
	bucketPGs    = []byte("placement_groups")
	bucketMeta   = []byte("meta")

	keySchema  = []byte("schema")
	keyNextJob = []byte("next_job")
)

// boltSchema is the version of the file layout; a file of another version is
// refused rather than misread.
const boltSchema = 1

// boltOpenTimeout bounds waiting for the file lock another process holds.
const boltOpenTimeout = 2 * time.Second

// BoltStore is the head's on-disk Store: one bbolt file (an embedded,
// transactional key-value store) with a bucket per table. It loads every
// table into memory when it opens and serves reads from there; each Put
// writes its row in its own fsynced transaction before the in-memory copy
// changes, so what a read returns has been persisted — except a node's
// available resources, which change with every heartbeat and are written
// only together with a change to the rest of the node's row (raylets
// report them again right after a head restart).
//
// Nodes and jobs are stored as JSON, actors and placement groups as their
// protobuf messages.
type BoltStore struct {
	db  *bolt.DB
	mem *MemoryStore
	// nodeKeys holds the persisted form of each node, to skip writes that
	// change only its available resources.
	nodeKeys map[ids.NodeID][]byte
}

var _ Store = (*BoltStore)(nil)

// OpenBoltStore opens (creating it and its directory if needed) the store
// file at path and loads it. Only one process can hold the file open; a
// second one fails after a short wait. Call Close when done.
func OpenBoltStore(path string) (*BoltStore, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, fmt.Errorf("scheduler store: %w", err)
	}
	db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: boltOpenTimeout})
	if errors.Is(err, bolt.ErrTimeout) {
		return nil, fmt.Errorf("scheduler store %s: another process (a running head?) holds it open", path)
	}
	if err != nil {
		return nil, fmt.Errorf("scheduler store %s: %w", path, err)
	}
	s := &BoltStore{db: db, mem: NewMemoryStore(), nodeKeys: make(map[ids.NodeID][]byte)}
	if err := s.load(); err != nil {
		db.Close()
		return nil, fmt.Errorf("scheduler store %s: %w", path, err)
	}
	return s, nil
}

// Close closes the file.
func (s *BoltStore) Close() error { return s.db.Close() }

// Path is the store file's path.
func (s *BoltStore) Path() string { return s.db.Path() }

func (s *BoltStore) load() error {
	return s.db.Update(func(tx *bolt.Tx) error {
		for _, b := range [][]byte{bucketNodes, bucketJobs, bucketActors, bucketPGs, bucketMeta} {
			if _, err := tx.CreateBucketIfNotExists(b); err != nil {
				return err
			}
		}
		meta := tx.Bucket(bucketMeta)
		if v := meta.Get(keySchema); v == nil {
			if err := meta.Put(keySchema, u32(boltSchema)); err != nil {
				return err
			}
		} else if len(v) != 4 || binary.BigEndian.Uint32(v) != boltSchema {
			return fmt.Errorf("file has schema version %x, this head reads version %d", v, boltSchema)
		}
		if v := meta.Get(keyNextJob); len(v) == 4 {
			s.mem.nextJob = binary.BigEndian.Uint32(v)
		}
		if err := tx.Bucket(bucketNodes).ForEach(func(k, v []byte) error {
			n, err := decodeNode(v)
			if err != nil {
				return fmt.Errorf("node %x: %w", k, err)
			}
			s.mem.nodes[n.ID] = n
			s.nodeKeys[n.ID] = nodeKey(n)
			return nil
		}); err != nil {
			return err
		}
		if err := tx.Bucket(bucketJobs).ForEach(func(k, v []byte) error {
			j, err := decodeJob(v)
			if err != nil {
				return fmt.Errorf("job %x: %w", k, err)
			}
			s.mem.jobs[j.ID] = j
			return nil
		}); err != nil {
			return err
		}
		if err := tx.Bucket(bucketActors).ForEach(func(k, v []byte) error {
			a := &pb.ActorInfo{}
			if err := proto.Unmarshal(v, a); err != nil {
				return fmt.Errorf("actor %x: %w", k, err)
			}
			id, err := ids.ParseActorID(a.GetSpec().GetActorId())
			if err != nil {
				return fmt.Errorf("actor %x: %w", k, err)
			}
			s.mem.actors[id] = a
			return nil
		}); err != nil {
			return err
		}
		return tx.Bucket(bucketPGs).ForEach(func(k, v []byte) error {
			pg := &pb.PlacementGroupInfo{}
			if err := proto.Unmarshal(v, pg); err != nil {
				return fmt.Errorf("placement group %x: %w", k, err)
			}
			id, err := ids.ParsePlacementGroupID(pg.GetPlacementGroupId())
			if err != nil {
				return fmt.Errorf("placement group %x: %w", k, err)
			}
			s.mem.pgs[id] = pg
			return nil
		})
	})
}

func u32(n uint32) []byte { return binary.BigEndian.AppendUint32(nil, n) }

// put writes one key in one transaction.
func (s *BoltStore) put(bucket, key, val []byte) error {
	return s.db.Update(func(tx *bolt.Tx) error { return tx.Bucket(bucket).Put(key, val) })
}

// storedNode is a NodeRecord as stored.
type storedNode struct {
	ID        string          `json:"id"`
	Address   string          `json:"address"`
	Total     sched.Resources `json:"total"`
	Available sched.Resources `json:"available"`
	Alive     bool            `json:"alive"`
	IsHead    bool            `json:"is_head"`
	LastSeen  time.Time       `json:"last_seen"`
}

func encodeNode(n *NodeRecord) ([]byte, error) {
	return json.Marshal(storedNode{ID: n.ID.String(), Address: n.Address, Total: n.Total, Available: n.Available,
		Alive: n.Alive, IsHead: n.IsHead, LastSeen: n.LastSeen})
}

func decodeNode(b []byte) (*NodeRecord, error) {
	var sn storedNode
	if err := json.Unmarshal(b, &sn); err != nil {
		return nil, err
	}
	raw, err := hex.DecodeString(sn.ID)
	if err != nil {
		return nil, err
	}
	id, err := ids.ParseNodeID(raw)
	if err != nil {
		return nil, err
	}
	n := &NodeRecord{ID: id, Address: sn.Address, Total: sn.Total, Available: sn.Available, Alive: sn.Alive, IsHead: sn.IsHead, LastSeen: sn.LastSeen}
	if n.Total == nil {
		n.Total = sched.Resources{}
	}
	if n.Available == nil {
		n.Available = sched.Resources{}
	}
	return n, nil
}

// nodeKey is the part of a node's row whose change must reach the disk: all
// of it but the available resources.
func nodeKey(n *NodeRecord) []byte {
	c := n.clone()
	c.Available = nil
	b, _ := encodeNode(c)
	return b
}

func (s *BoltStore) PutNode(n *NodeRecord) error {
	key := nodeKey(n)
	if !bytes.Equal(key, s.nodeKeys[n.ID]) {
		v, err := encodeNode(n)
		if err != nil {
			return err
		}
		if err := s.put(bucketNodes, n.ID[:], v); err != nil {
			return err
		}
		s.nodeKeys[n.ID] = key
	}
	return s.mem.PutNode(n)
}

func (s *BoltStore) GetNode(id ids.NodeID) (*NodeRecord, bool) { return s.mem.GetNode(id) }
func (s *BoltStore) ListNodes() []*NodeRecord                  { return s.mem.ListNodes() }

// storedJob is a JobRecord as stored.
type storedJob struct {
	ID            string    `json:"id"`
	BinarySHA256  string    `json:"binary_sha256"`
	DriverAddress string    `json:"driver_address,omitempty"`
	Namespace     string    `json:"namespace,omitempty"`
	Entrypoint    string    `json:"entrypoint,omitempty"`
	Finished      bool      `json:"finished"`
	FinishedAt    time.Time `json:"finished_at"`
}

func encodeJob(j *JobRecord) ([]byte, error) {
	return json.Marshal(storedJob{ID: j.ID.String(), BinarySHA256: hex.EncodeToString(j.BinarySHA256[:]),
		DriverAddress: j.DriverAddress, Namespace: j.Namespace, Entrypoint: j.Entrypoint,
		Finished: j.Finished, FinishedAt: j.FinishedAt})
}

func decodeJob(b []byte) (*JobRecord, error) {
	var sj storedJob
	if err := json.Unmarshal(b, &sj); err != nil {
		return nil, err
	}
	raw, err := hex.DecodeString(sj.ID)
	if err != nil {
		return nil, err
	}
	id, err := ids.ParseJobID(raw)
	if err != nil {
		return nil, err
	}
	sha, err := hex.DecodeString(sj.BinarySHA256)
	if err != nil {
		return nil, err
	}
	h, err := parseSHA256(sha)
	if err != nil {
		return nil, err
	}
	return &JobRecord{ID: id, BinarySHA256: h, DriverAddress: sj.DriverAddress, Namespace: sj.Namespace,
		Entrypoint: sj.Entrypoint, Finished: sj.Finished, FinishedAt: sj.FinishedAt}, nil
}

func (s *BoltStore) PutJob(j *JobRecord) error {
	v, err := encodeJob(j)
	if err != nil {
		return err
	}
	if err := s.put(bucketJobs, j.ID[:], v); err != nil {
		return err
	}
	return s.mem.PutJob(j)
}

func (s *BoltStore) GetJob(id ids.JobID) (*JobRecord, bool) { return s.mem.GetJob(id) }
func (s *BoltStore) ListJobs() []*JobRecord                 { return s.mem.ListJobs() }

func (s *BoltStore) PutActor(a *pb.ActorInfo) error {
	id, err := ids.ParseActorID(a.GetSpec().GetActorId())
	if err != nil {
		return err
	}
	v, err := proto.MarshalOptions{Deterministic: true}.Marshal(a)
	if err != nil {
		return err
	}
	if err := s.put(bucketActors, id[:], v); err != nil {
		return err
	}
	return s.mem.PutActor(a)
}

func (s *BoltStore) GetActor(id ids.ActorID) (*pb.ActorInfo, bool) { return s.mem.GetActor(id) }
func (s *BoltStore) ListActors() []*pb.ActorInfo                   { return s.mem.ListActors() }

func (s *BoltStore) PutPlacementGroup(pg *pb.PlacementGroupInfo) error {
	id, err := ids.ParsePlacementGroupID(pg.GetPlacementGroupId())
	if err != nil {
		return err
	}
	v, err := proto.MarshalOptions{Deterministic: true}.Marshal(pg)
	if err != nil {
		return err
	}
	if err := s.put(bucketPGs, id[:], v); err != nil {
		return err
	}
	return s.mem.PutPlacementGroup(pg)
}

func (s *BoltStore) ListPlacementGroups() []*pb.PlacementGroupInfo {
	return s.mem.ListPlacementGroups()
}

func (s *BoltStore) PutNextJob(n uint32) error {
	if err := s.put(bucketMeta, keyNextJob, u32(n)); err != nil {
		return err
	}
	return s.mem.PutNextJob(n)
}

func (s *BoltStore) NextJob() uint32 { return s.mem.NextJob() }
