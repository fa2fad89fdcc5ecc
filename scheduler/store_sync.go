package scheduler

import (
	"sync"

	"github.com/goray/goray/internal/ids"
	pb "github.com/goray/goray/proto/goray/v1"
)

// syncStore serializes the managers' calls to one Store, so an
// implementation need not be safe for concurrent use. mu is a leaf lock:
// it is held only for the one Store call.
//
// Who writes what: the node manager writes node rows, the job manager job
// rows and the next job number, the actor manager actor rows, the placement
// group manager placement group rows. Each owner reads and writes its rows
// under its own lock, so a read-modify-write of a row is never interleaved
// with another; other managers read no rows: they ask the owner.
type syncStore struct {
	mu sync.Mutex
	s  Store // guarded by mu
}

var _ Store = (*syncStore)(nil)

func (s *syncStore) PutNode(n *NodeRecord) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.s.PutNode(n)
}

func (s *syncStore) GetNode(id ids.NodeID) (*NodeRecord, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.s.GetNode(id)
}

func (s *syncStore) ListNodes() []*NodeRecord {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.s.ListNodes()
}

func (s *syncStore) PutJob(j *JobRecord) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.s.PutJob(j)
}

func (s *syncStore) GetJob(id ids.JobID) (*JobRecord, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.s.GetJob(id)
}

func (s *syncStore) ListJobs() []*JobRecord {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.s.ListJobs()
}

func (s *syncStore) PutActor(a *pb.ActorInfo) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.s.PutActor(a)
}

func (s *syncStore) GetActor(id ids.ActorID) (*pb.ActorInfo, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.s.GetActor(id)
}

func (s *syncStore) ListActors() []*pb.ActorInfo {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.s.ListActors()
}

func (s *syncStore) PutPlacementGroup(pg *pb.PlacementGroupInfo) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.s.PutPlacementGroup(pg)
}

func (s *syncStore) ListPlacementGroups() []*pb.PlacementGroupInfo {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.s.ListPlacementGroups()
}

func (s *syncStore) PutNextJob(n uint32) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.s.PutNextJob(n)
}

func (s *syncStore) NextJob() uint32 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.s.NextJob()
}
