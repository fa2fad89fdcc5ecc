package scheduler

import (
	"maps"
	"time"

	"github.com/goray/goray/internal/ids"
	"github.com/goray/goray/internal/sched"
	pb "github.com/goray/goray/proto/goray/v1"
	"google.golang.org/protobuf/proto"
)

// NodeRecord is one row of the node table.
type NodeRecord struct {
	ID      ids.NodeID
	Address string
	// Total and Available map resource names to amounts.
	Total     sched.Resources
	Available sched.Resources
	Alive     bool
	// IsHead marks the node that shares its process with the head.
	IsHead bool
	// LastSeen is when the node last registered or heartbeat.
	LastSeen time.Time
}

func (n *NodeRecord) clone() *NodeRecord {
	c := *n
	c.Total = maps.Clone(n.Total)
	c.Available = maps.Clone(n.Available)
	return &c
}

// JobRecord is one row of the job table.
type JobRecord struct {
	ID            ids.JobID
	BinarySHA256  [32]byte
	DriverAddress string
	Namespace     string
	Entrypoint    string
	Finished      bool
	// FinishedAt is when Finished became true.
	FinishedAt time.Time
}

// Store holds the head's tables. The Server serializes every call (each
// manager writes only its own table), so implementations need not be safe
// for concurrent use. Values
// passed to Put and returned by Get and List belong to the caller: an
// implementation must not keep or hand out memory the caller can change.
//
// Reads cannot fail: a persistent implementation loads its tables when it
// opens and serves reads from memory; Put reports a failure to persist.
type Store interface {
	PutNode(n *NodeRecord) error
	GetNode(id ids.NodeID) (*NodeRecord, bool)
	ListNodes() []*NodeRecord

	PutJob(j *JobRecord) error
	GetJob(id ids.JobID) (*JobRecord, bool)
	ListJobs() []*JobRecord

	// PutActor stores an actor keyed by its spec's actor ID.
	PutActor(a *pb.ActorInfo) error
	GetActor(id ids.ActorID) (*pb.ActorInfo, bool)
	ListActors() []*pb.ActorInfo

	// PutPlacementGroup stores a group keyed by its placement group ID.
	PutPlacementGroup(pg *pb.PlacementGroupInfo) error
	ListPlacementGroups() []*pb.PlacementGroupInfo

	// PutNextJob stores the number the next registered job gets; NextJob
	// returns it (0 when never stored).
	PutNextJob(n uint32) error
	NextJob() uint32
}

// MemoryStore is a Store that keeps its tables in memory only.
type MemoryStore struct {
	nodes   map[ids.NodeID]*NodeRecord
	jobs    map[ids.JobID]*JobRecord
	actors  map[ids.ActorID]*pb.ActorInfo
	pgs     map[ids.PlacementGroupID]*pb.PlacementGroupInfo
	nextJob uint32
	// fileIdx is the file index (store_files.go), with its own lock.
	fileIdx memFileIndex
}

var _ Store = (*MemoryStore)(nil)

// NewMemoryStore makes an empty MemoryStore.
func NewMemoryStore() *MemoryStore {
	return &MemoryStore{
		nodes:  make(map[ids.NodeID]*NodeRecord),
		jobs:   make(map[ids.JobID]*JobRecord),
		actors: make(map[ids.ActorID]*pb.ActorInfo),
		pgs:    make(map[ids.PlacementGroupID]*pb.PlacementGroupInfo),
	}
}

func (m *MemoryStore) PutNode(n *NodeRecord) error { m.nodes[n.ID] = n.clone(); return nil }

func (m *MemoryStore) GetNode(id ids.NodeID) (*NodeRecord, bool) {
	n, ok := m.nodes[id]
	if !ok {
		return nil, false
	}
	return n.clone(), true
}

func (m *MemoryStore) ListNodes() []*NodeRecord {
	out := make([]*NodeRecord, 0, len(m.nodes))
	for _, n := range m.nodes {
		out = append(out, n.clone())
	}
	return out
}

func (m *MemoryStore) PutJob(j *JobRecord) error { c := *j; m.jobs[j.ID] = &c; return nil }

func (m *MemoryStore) GetJob(id ids.JobID) (*JobRecord, bool) {
	j, ok := m.jobs[id]
	if !ok {
		return nil, false
	}
	c := *j
	return &c, true
}

func (m *MemoryStore) ListJobs() []*JobRecord {
	out := make([]*JobRecord, 0, len(m.jobs))
	for _, j := range m.jobs {
		c := *j
		out = append(out, &c)
	}
	return out
}

func (m *MemoryStore) PutActor(a *pb.ActorInfo) error {
	id, err := ids.ParseActorID(a.GetSpec().GetActorId())
	if err != nil {
		return err
	}
	m.actors[id] = proto.Clone(a).(*pb.ActorInfo)
	return nil
}

func (m *MemoryStore) GetActor(id ids.ActorID) (*pb.ActorInfo, bool) {
	a, ok := m.actors[id]
	if !ok {
		return nil, false
	}
	return proto.Clone(a).(*pb.ActorInfo), true
}

func (m *MemoryStore) ListActors() []*pb.ActorInfo {
	out := make([]*pb.ActorInfo, 0, len(m.actors))
	for _, a := range m.actors {
		out = append(out, proto.Clone(a).(*pb.ActorInfo))
	}
	return out
}

func (m *MemoryStore) PutPlacementGroup(pg *pb.PlacementGroupInfo) error {
	id, err := ids.ParsePlacementGroupID(pg.GetPlacementGroupId())
	if err != nil {
		return err
	}
	m.pgs[id] = proto.Clone(pg).(*pb.PlacementGroupInfo)
	return nil
}

func (m *MemoryStore) ListPlacementGroups() []*pb.PlacementGroupInfo {
	out := make([]*pb.PlacementGroupInfo, 0, len(m.pgs))
	for _, pg := range m.pgs {
		out = append(out, proto.Clone(pg).(*pb.PlacementGroupInfo))
	}
	return out
}

func (m *MemoryStore) PutNextJob(n uint32) error { m.nextJob = n; return nil }

func (m *MemoryStore) NextJob() uint32 { return m.nextJob }
