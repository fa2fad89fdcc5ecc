// Package ids defines goray's typed identifiers. They nest as Ray's do:
// a JobID is a prefix of every ActorID and TaskID of the job, and a TaskID is
// a prefix of every ObjectID the task returns.
package ids

import (
	"crypto/rand"
	"encoding/binary"
	"encoding/hex"
	"fmt"
)

// Sizes in bytes.
const (
	JobIDSize    = 4
	ActorIDSize  = 16
	TaskIDSize   = 16
	ObjectIDSize = 20
	NodeIDSize   = 16
	WorkerIDSize = 16
	LeaseIDSize  = 16
)

type (
	// JobID names one driver's job; the head hands them out in order.
	JobID [JobIDSize]byte
	// ActorID is a JobID followed by 12 unique bytes.
	ActorID [ActorIDSize]byte
	// TaskID is a JobID followed by 12 unique bytes.
	TaskID [TaskIDSize]byte
	// ObjectID is the TaskID that made the object followed by a big-endian index.
	ObjectID [ObjectIDSize]byte
	// NodeID names one raylet incarnation.
	NodeID [NodeIDSize]byte
	// WorkerID names one worker or driver process.
	WorkerID [WorkerIDSize]byte
	// LeaseID names one worker lease.
	LeaseID [LeaseIDSize]byte
)

func random(b []byte) {
	if _, err := rand.Read(b); err != nil {
		panic(fmt.Sprintf("goray: crypto/rand failed: %v", err))
	}
}

// JobIDFromUint32 makes the JobID with number n.
func JobIDFromUint32(n uint32) JobID {
	var j JobID
	binary.BigEndian.PutUint32(j[:], n)
	return j
}

// Uint32 is the job's number.
func (j JobID) Uint32() uint32 { return binary.BigEndian.Uint32(j[:]) }

// NewActorID makes a fresh actor ID in job j.
func NewActorID(j JobID) ActorID {
	var a ActorID
	copy(a[:], j[:])
	random(a[JobIDSize:])
	return a
}

// Job is the job the actor belongs to.
func (a ActorID) Job() JobID { var j JobID; copy(j[:], a[:]); return j }

// NewTaskID makes a fresh task ID in job j.
func NewTaskID(j JobID) TaskID {
	var t TaskID
	copy(t[:], j[:])
	random(t[JobIDSize:])
	return t
}

// Job is the job the task belongs to.
func (t TaskID) Job() JobID { var j JobID; copy(j[:], t[:]); return j }

// ObjectID is the id of the task's index-th object.
func (t TaskID) ObjectID(index uint32) ObjectID {
	var o ObjectID
	copy(o[:], t[:])
	binary.BigEndian.PutUint32(o[TaskIDSize:], index)
	return o
}

// Task is the task that made the object.
func (o ObjectID) Task() TaskID { var t TaskID; copy(t[:], o[:]); return t }

// Job is the job the object belongs to.
func (o ObjectID) Job() JobID { var j JobID; copy(j[:], o[:]); return j }

// NewNodeID makes a fresh node ID.
func NewNodeID() NodeID { var n NodeID; random(n[:]); return n }

// NewWorkerID makes a fresh worker ID.
func NewWorkerID() WorkerID { var w WorkerID; random(w[:]); return w }

// NewLeaseID makes a fresh lease ID.
func NewLeaseID() LeaseID { var l LeaseID; random(l[:]); return l }

func (j JobID) String() string    { return hex.EncodeToString(j[:]) }
func (a ActorID) String() string  { return hex.EncodeToString(a[:]) }
func (t TaskID) String() string   { return hex.EncodeToString(t[:]) }
func (o ObjectID) String() string { return hex.EncodeToString(o[:]) }
func (n NodeID) String() string   { return hex.EncodeToString(n[:]) }
func (w WorkerID) String() string { return hex.EncodeToString(w[:]) }
func (l LeaseID) String() string  { return hex.EncodeToString(l[:]) }

// IsZero reports whether the ID is unset.
func (n NodeID) IsZero() bool { return n == NodeID{} }

// IsZero reports whether the ID is unset.
func (a ActorID) IsZero() bool { return a == ActorID{} }

func parse(dst []byte, b []byte, kind string) error {
	if len(b) != len(dst) {
		return fmt.Errorf("malformed %s: got %d bytes, want %d", kind, len(b), len(dst))
	}
	copy(dst, b)
	return nil
}

// ParseJobID reads a JobID from its wire bytes.
func ParseJobID(b []byte) (j JobID, err error) { err = parse(j[:], b, "job ID"); return }

// ParseActorID reads an ActorID from its wire bytes.
func ParseActorID(b []byte) (a ActorID, err error) { err = parse(a[:], b, "actor ID"); return }

// ParseObjectID reads an ObjectID from its wire bytes.
func ParseObjectID(b []byte) (o ObjectID, err error) { err = parse(o[:], b, "object ID"); return }

// ParseNodeID reads a NodeID from its wire bytes.
func ParseNodeID(b []byte) (n NodeID, err error) { err = parse(n[:], b, "node ID"); return }

// ParseWorkerID reads a WorkerID from its wire bytes.
func ParseWorkerID(b []byte) (w WorkerID, err error) { err = parse(w[:], b, "worker ID"); return }

// ParseLeaseID reads a LeaseID from its wire bytes.
func ParseLeaseID(b []byte) (l LeaseID, err error) { err = parse(l[:], b, "lease ID"); return }

// ParseObjectIDHex reads an ObjectID from its String form.
func ParseObjectIDHex(s string) (ObjectID, error) {
	b, err := hex.DecodeString(s)
	if err != nil {
		return ObjectID{}, fmt.Errorf("malformed object ID %q: %w", s, err)
	}
	return ParseObjectID(b)
}

// PlacementGroupIDSize is the size of a PlacementGroupID in bytes.
const PlacementGroupIDSize = 16

// PlacementGroupID is a JobID followed by 12 unique bytes.
type PlacementGroupID [PlacementGroupIDSize]byte

// NewPlacementGroupID makes a fresh placement group ID in job j.
func NewPlacementGroupID(j JobID) PlacementGroupID {
	var p PlacementGroupID
	copy(p[:], j[:])
	random(p[JobIDSize:])
	return p
}

// Job is the job that created the group.
func (p PlacementGroupID) Job() JobID { var j JobID; copy(j[:], p[:]); return j }

func (p PlacementGroupID) String() string { return hex.EncodeToString(p[:]) }

// ParsePlacementGroupID reads a PlacementGroupID from its wire bytes.
func ParsePlacementGroupID(b []byte) (p PlacementGroupID, err error) {
	err = parse(p[:], b, "placement group ID")
	return
}
