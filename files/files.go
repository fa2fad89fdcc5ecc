// Package files is goray's cluster-wide file store (the seed's distributed
// file system): files of any size, streamed in chunks, addressed by the
// SHA-256 of their content, kept on the raylets' disks with N replicas on
// distinct nodes, with optional names (a path that maps to a hash).
//
// Every read is verified: each block against the checksum recorded when
// the file was put before it is handed on (a corrupt replica is detected,
// the read goes on from another replica, and the head repairs the bad one),
// and the whole content against its SHA-256 at the end. A read whose raylet
// dies goes on from another replica at the offset already verified, at
// once. When a node dies, its files are copied back to N replicas on the
// live nodes. See docs/storage.md for the rules and the limits.
//
// Calls need a connected driver or worker (runtime.Init). Puts go through
// the process's own raylet; reads prefer its replica.
//
//	info, err := files.Put(ctx, f, files.WithReplicas(3), files.WithName("data/in.csv"))
//	r, err := files.Open(ctx, "data/in.csv") // or info.Hash.String()
//	defer r.Close()
//	io.Copy(dst, r)
package files

import (
	"context"
	"fmt"
	"io"
	"time"

	"github.com/goray/goray/internal/core"
	"github.com/goray/goray/internal/errs"
	ifiles "github.com/goray/goray/internal/files"
	pb "github.com/goray/goray/proto/goray/v1"
)

// Hash is the SHA-256 of a file's content: its address.
type Hash [32]byte

// String is the hash in lower-case hex (64 digits), as Open takes it.
func (h Hash) String() string { return ifiles.Hash(h).String() }

// ParseHash parses 64 hex digits, optionally after "sha256:"; anything
// else is ErrInvalidArgument.
func ParseHash(s string) (Hash, error) {
	h, err := ifiles.ParseHash(s)
	return Hash(h), err
}

// ValidateName checks a name: a '/'-separated path of at most 1024 bytes
// of UTF-8 without control characters, with no empty, "." or ".." segment,
// and not written like a hash. A bad one is ErrInvalidArgument.
func ValidateName(name string) error { return ifiles.ValidateName(name) }

// Replica is a node holding a copy of a file.
type Replica struct {
	NodeID  string
	Address string
}

// Info describes a stored file.
type Info struct {
	Hash Hash
	Size int64
	// Names are the names that map to the file.
	Names []string
	// ReplicasWanted is the replica count asked for; Replicas are the
	// alive nodes holding one (fewer than wanted when fewer nodes are
	// alive, until repaired).
	ReplicasWanted int
	Replicas       []Replica
	Created        time.Time
}

func infoFrom(p *pb.FileInfo) Info {
	in := Info{Size: int64(p.GetSize()), Names: p.GetNames(), ReplicasWanted: int(p.GetReplicasWanted()), Created: time.UnixMilli(p.GetCreatedUnixMs())}
	copy(in.Hash[:], p.GetSha256())
	for _, r := range p.GetReplicas() {
		in.Replicas = append(in.Replicas, Replica{NodeID: fmt.Sprintf("%x", r.GetNodeId()), Address: r.GetAddress()})
	}
	return in
}

// Option configures Put.
type Option interface{ apply(*putOptions) }

type putOptions struct {
	replicas int
	name     string
}

type optionFunc func(*putOptions)

func (f optionFunc) apply(o *putOptions) { f(o) }

// WithReplicas asks for n replicas on distinct nodes (default 1, at most
// 1000). With fewer alive nodes the file is stored on all of them, and
// Info.Replicas says how many; the head adds the rest as nodes join.
func WithReplicas(n int) Option { return optionFunc(func(o *putOptions) { o.replicas = n }) }

// WithName maps name to the file (see ValidateName); a name that maps to
// another file is moved to this one. Default: no name.
func WithName(name string) Option { return optionFunc(func(o *putOptions) { o.name = name }) }

// dial is a file client of the current process's cluster.
func dial() (*ifiles.Client, error) {
	c, err := core.Current()
	if err != nil {
		return nil, err
	}
	head, raylet, token, node := c.Endpoints()
	if raylet == "" {
		return nil, errs.New(errs.KindUnavailable, "", "this process has no raylet to put files through")
	}
	return ifiles.Dial(head, raylet, token, node[:])
}

// Put streams r into the file store (never holding it whole in memory)
// and returns the stored file's Info. A disk that fills is
// ErrObjectStoreFull (the partial file is removed, stored files are
// intact); a malformed name is ErrInvalidArgument.
func Put(ctx context.Context, r io.Reader, opts ...Option) (Info, error) {
	o := putOptions{replicas: 1}
	for _, opt := range opts {
		opt.apply(&o)
	}
	c, err := dial()
	if err != nil {
		return Info{}, err
	}
	defer c.Close()
	p, err := c.Put(ctx, r, o.replicas, o.name)
	if err != nil {
		return Info{}, err
	}
	return infoFrom(p), nil
}

// Reader reads a file, verified; see Open.
type Reader struct {
	c *ifiles.Client
	r *ifiles.Reader
}

// Read reads verified bytes.
func (r *Reader) Read(p []byte) (int, error) { return r.r.Read(p) }

// WriteTo copies the rest of the verified file to w.
func (r *Reader) WriteTo(w io.Writer) (int64, error) { return r.r.WriteTo(w) }

// Info is the file's Info as of Open.
func (r *Reader) Info() Info { return infoFrom(r.r.Info()) }

// Close ends the read.
func (r *Reader) Close() error {
	err := r.r.Close()
	r.c.Close()
	return err
}

// Open opens a file by hash (64 hex digits, optionally after "sha256:") or
// name. An unknown one is ErrNotFound; a malformed one ErrInvalidArgument;
// a file none of whose replicas can be read is ErrObjectLost. The read
// lives under ctx.
func Open(ctx context.Context, ref string) (*Reader, error) {
	c, err := dial()
	if err != nil {
		return nil, err
	}
	r, err := c.Open(ctx, ref)
	if err != nil {
		c.Close()
		return nil, err
	}
	return &Reader{c: c, r: r}, nil
}

// Stat describes a file by hash or name.
func Stat(ctx context.Context, ref string) (Info, error) {
	c, err := dial()
	if err != nil {
		return Info{}, err
	}
	defer c.Close()
	p, err := c.Stat(ctx, ref)
	if err != nil {
		return Info{}, err
	}
	return infoFrom(p), nil
}

// List lists every file, or with a prefix the named files whose name
// starts with it, ordered by name.
func List(ctx context.Context, prefix string) ([]Info, error) {
	c, err := dial()
	if err != nil {
		return nil, err
	}
	defer c.Close()
	ps, err := c.List(ctx, prefix)
	if err != nil {
		return nil, err
	}
	out := make([]Info, 0, len(ps))
	for _, p := range ps {
		out = append(out, infoFrom(p))
	}
	return out, nil
}

// Remove removes a file by hash (its content and every name of it) or a
// name (and the content when no other name maps to it).
func Remove(ctx context.Context, ref string) error {
	c, err := dial()
	if err != nil {
		return err
	}
	defer c.Close()
	_, err = c.Remove(ctx, ref)
	return err
}
