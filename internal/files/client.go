package files

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"

	"github.com/goray/goray/internal/errs"
	"github.com/goray/goray/internal/rpc"
	pb "github.com/goray/goray/proto/goray/v1"
)

// putChunk is the size of a put's messages.
const putChunk = 1 << 20

// DefaultStallTimeout is how long a reader waits for the next block from
// one replica before it fails over to another: a raylet that is stopped
// (SIGSTOP) or cut off sends nothing and breaks nothing.
const DefaultStallTimeout = 10 * time.Second

// Client puts and reads files: puts go through one raylet (the caller's
// own), reads straight to the raylets holding replicas, lookups to the
// head's index. Any goroutine calls it; mu guards the connection cache and
// is never held across a call.
type Client struct {
	token     string
	index     pb.FileIndexServiceClient
	via       pb.FileStoreServiceClient
	localNode []byte
	stall     atomic.Int64 // the stall timeout in nanoseconds

	mu     sync.Mutex
	conns  map[string]*grpc.ClientConn // guarded by mu: by raylet address
	own    []io.Closer                 // guarded by mu: dialled by Dial
	closed bool                        // guarded by mu
}

// Dial makes a Client whose puts go through the raylet at rayletAddr (the
// node localNode, whose replicas reads prefer; nil for none) and whose
// lookups go to the head at headAddr. Close closes its connections.
func Dial(headAddr, rayletAddr, token string, localNode []byte) (*Client, error) {
	hc, err := rpc.DialHead(headAddr, token)
	if err != nil {
		return nil, err
	}
	rc, err := dialBulk(rayletAddr, token)
	if err != nil {
		hc.Close()
		return nil, err
	}
	c := &Client{token: token, index: pb.NewFileIndexServiceClient(hc), via: pb.NewFileStoreServiceClient(rc), localNode: localNode,
		conns: map[string]*grpc.ClientConn{rayletAddr: rc}, own: []io.Closer{hc, rc}}
	c.stall.Store(int64(DefaultStallTimeout))
	return c, nil
}

// SetStallTimeout sets how long readers wait for a block from one replica
// before failing over (default DefaultStallTimeout).
func (c *Client) SetStallTimeout(d time.Duration) { c.stall.Store(int64(d)) }

// Close closes the client's connections; readers still open fail.
func (c *Client) Close() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return
	}
	c.closed = true
	for _, cc := range c.conns {
		cc.Close()
	}
	for _, cc := range c.own {
		cc.Close()
	}
}

func (c *Client) raylet(addr string) (pb.FileStoreServiceClient, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return nil, errs.New(errs.KindShuttingDown, "", "the file client is closed")
	}
	cc := c.conns[addr]
	if cc == nil {
		var err error
		if cc, err = dialBulk(addr, c.token); err != nil {
			return nil, err
		}
		c.conns[addr] = cc
	}
	return pb.NewFileStoreServiceClient(cc), nil
}

// Put streams r to the raylet, which stores it with replicas copies (at
// least 1) on distinct nodes, under name when not empty. The returned
// entry's Replicas say where it was stored: fewer than asked when fewer
// nodes are alive (or a target failed).
func (c *Client) Put(ctx context.Context, r io.Reader, replicas int, name string) (*pb.FileInfo, error) {
	if name != "" {
		if err := ValidateName(name); err != nil {
			return nil, err
		}
	}
	if replicas < 0 || replicas > 1000 {
		return nil, errs.New(errs.KindInvalidArgument, "", "replicas: got %d, want 1 to 1000 (0 means 1)", replicas)
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	// The chunks are sent from pooled buffers without a marshalling copy;
	// gRPC returns each to the pool once it wrote it.
	codec := &putCodec{}
	st, err := c.via.PutFile(ctx, grpc.ForceCodecV2(codec))
	if err != nil {
		return nil, err
	}
	if err := st.Send(&pb.PutFileRequest{Header: &pb.PutFileHeader{Replicas: uint32(replicas), Name: name}}); err != nil {
		_, rerr := st.CloseAndRecv()
		return nil, errors.Join(err, rerr)
	}
	for {
		buf := putPool.Get(putChunk)
		n, rerr := io.ReadFull(r, *buf)
		if n > 0 {
			codec.next = buf
			err := st.Send(&pb.PutFileRequest{Data: (*buf)[:n]})
			if codec.next != nil { // not taken by the codec
				putPool.Put(buf)
				codec.next = nil
			}
			if err != nil {
				_, err = st.CloseAndRecv() // the server's error
				return nil, err
			}
		} else {
			putPool.Put(buf)
		}
		if errors.Is(rerr, io.EOF) || errors.Is(rerr, io.ErrUnexpectedEOF) {
			break
		}
		if rerr != nil {
			return nil, fmt.Errorf("put file: read the input: %w", rerr)
		}
	}
	resp, err := st.CloseAndRecv()
	if err != nil {
		return nil, err
	}
	return resp.GetInfo(), nil
}

// lookupRequest is ref (a hash or a name) as a lookup.
func lookupRequest(ref string) (hash []byte, name string, err error) {
	if LooksLikeHash(ref) {
		h, err := ParseHash(ref)
		if err != nil {
			return nil, "", err
		}
		return h[:], "", nil
	}
	if err := ValidateName(ref); err != nil {
		return nil, "", err
	}
	return nil, ref, nil
}

// Stat looks a file up by hash ("sha256:<hex>" or 64 hex digits) or name.
func (c *Client) Stat(ctx context.Context, ref string) (*pb.FileInfo, error) {
	h, name, err := lookupRequest(ref)
	if err != nil {
		return nil, err
	}
	resp, err := c.index.LookupFile(ctx, &pb.LookupFileRequest{Sha256: h, Name: name})
	if err != nil {
		return nil, err
	}
	return resp.GetInfo(), nil
}

// List lists the files; with a prefix, the named files whose name starts
// with it.
func (c *Client) List(ctx context.Context, prefix string) ([]*pb.FileInfo, error) {
	resp, err := c.index.ListFiles(ctx, &pb.ListFilesRequest{Prefix: prefix})
	if err != nil {
		return nil, err
	}
	return resp.GetFiles(), nil
}

// Remove removes a file by hash (its content and every name of it) or a
// name (and the content when no other name maps to it), and says whether
// the content went.
func (c *Client) Remove(ctx context.Context, ref string) (bool, error) {
	h, name, err := lookupRequest(ref)
	if err != nil {
		return false, err
	}
	resp, err := c.index.RemoveFile(ctx, &pb.RemoveFileRequest{Sha256: h, Name: name})
	if err != nil {
		return false, err
	}
	return resp.GetRemovedContent(), nil
}

// Open opens a file for reading by hash or name. The Reader lives under
// ctx: cancelling it ends the read.
func (c *Client) Open(ctx context.Context, ref string) (*Reader, error) {
	info, err := c.Stat(ctx, ref)
	if err != nil {
		return nil, err
	}
	v, err := newVerifier(info)
	if err != nil {
		return nil, err
	}
	r := &Reader{c: c, info: info, v: v, tried: map[string]bool{}}
	r.ctx, r.cancel = context.WithCancel(ctx)
	r.order(info.GetReplicas())
	return r, nil
}

// Failover is a read that moved from one replica to another.
type Failover struct {
	// From is the raylet that failed; Offset the verified bytes so far.
	From   string
	Offset uint64
	Err    error
	// At is when the failure was seen, Resumed when the first verified
	// block of the next replica arrived (zero when none did).
	At, Resumed time.Time
}

// Reader reads a file, verifying every block against the index's block
// checksums before handing it on, and the whole content against its
// SHA-256 (hashed as it is read, across failovers): the Read that reaches
// the end returns io.EOF only when they match. When the raylet it reads from fails (the
// stream breaks, the replica is missing) or sends a corrupt block (then the
// head is told, and repairs it), it goes on from the verified offset on
// another replica, and asks the head again once every replica it knew
// failed. A replica that sends nothing for 10 s counts as failed too.
// One goroutine at a time calls it.
type Reader struct {
	ctx    context.Context
	cancel context.CancelFunc
	c      *Client
	info   *pb.FileInfo
	v      *verifier

	queue   []*pb.FileReplica
	tried   map[string]bool
	cur     *pb.FileReplica
	stream  pb.FileStoreService_ReadFileClient
	scancel context.CancelFunc
	buf     []byte
	fails   []Failover
	relooks int
	err     error
	// The verified blocks go to a goroutine that hashes the whole content
	// (started with the first block, ended at the end or by Close); the
	// end of the file is checked against the file's SHA-256.
	hashIn  chan []byte
	hashOut chan Hash
}

// Info is the file's index entry.
func (r *Reader) Info() *pb.FileInfo { return r.info }

// Serving is the address of the raylet the reader reads from ("" before
// the first Read or after the last).
func (r *Reader) Serving() string {
	if r.cur == nil {
		return ""
	}
	return r.cur.GetAddress()
}

// Failovers are the failovers so far.
func (r *Reader) Failovers() []Failover { return r.fails }

// order queues the replicas not yet tried, the local node's first.
func (r *Reader) order(reps []*pb.FileReplica) {
	for _, rep := range reps {
		if r.tried[rep.GetAddress()] {
			continue
		}
		if r.c.localNode != nil && bytes.Equal(rep.GetNodeId(), r.c.localNode) {
			r.queue = append([]*pb.FileReplica{rep}, r.queue...)
		} else {
			r.queue = append(r.queue, rep)
		}
	}
}

// Read reads verified bytes.
func (r *Reader) Read(p []byte) (int, error) {
	for len(r.buf) == 0 {
		if r.err != nil {
			return 0, r.err
		}
		if r.v.done() {
			r.err = r.end()
			return 0, r.err
		}
		if err := r.nextBlock(); err != nil {
			r.err = err
			return 0, err
		}
	}
	n := copy(p, r.buf)
	r.buf = r.buf[n:]
	return n, nil
}

// WriteTo copies the verified file to w.
func (r *Reader) WriteTo(w io.Writer) (int64, error) {
	var total int64
	for {
		if len(r.buf) > 0 {
			n, err := w.Write(r.buf)
			total += int64(n)
			r.buf = r.buf[n:]
			if err != nil {
				return total, err
			}
		}
		if r.err != nil {
			if errors.Is(r.err, io.EOF) {
				return total, nil
			}
			return total, r.err
		}
		if r.v.done() {
			r.err = r.end()
			continue
		}
		if err := r.nextBlock(); err != nil {
			r.err = err
		}
	}
}

// nextBlock receives and verifies the next block, failing over as needed.
func (r *Reader) nextBlock() error {
	for {
		if err := r.ctx.Err(); err != nil {
			return errs.Context(err, "read file")
		}
		if r.stream == nil {
			if err := r.connect(); err != nil {
				return err
			}
		}
		d := time.Duration(r.c.stall.Load())
		stall := time.AfterFunc(d, r.scancel)
		m, err := r.stream.Recv()
		if !stall.Stop() && err != nil {
			err = fmt.Errorf("no block for %v: %w", d, err)
		}
		if err == nil {
			err = r.v.check(m.GetOffset(), m.GetData())
			if err == nil {
				if n := len(r.fails); n > 0 && r.fails[n-1].Resumed.IsZero() {
					r.fails[n-1].Resumed = time.Now()
				}
				r.buf = m.GetData()
				r.hash(r.buf)
				return nil
			}
			if errors.Is(err, errCorrupt) {
				r.reportCorrupt()
			}
		} else if errors.Is(err, io.EOF) {
			err = fmt.Errorf("the stream ended at byte %d of %d", r.v.offset(), r.info.GetSize())
		}
		if cerr := r.ctx.Err(); cerr != nil {
			return errs.Context(cerr, "read file")
		}
		r.fails = append(r.fails, Failover{From: r.cur.GetAddress(), Offset: r.v.offset(), Err: err, At: time.Now()})
		r.closeStream()
	}
}

// hash hands a verified block (a message's own bytes, never reused) to
// the hashing goroutine.
func (r *Reader) hash(b []byte) {
	if r.hashIn == nil {
		in, out := make(chan []byte, 8), make(chan Hash, 1)
		r.hashIn, r.hashOut = in, out
		go func() { out <- hashAll(in) }()
	}
	r.hashIn <- b
}

// stopHash ends the hashing goroutine and returns its sum.
func (r *Reader) stopHash() Hash {
	if r.hashIn == nil {
		return Sum(nil)
	}
	close(r.hashIn)
	r.hashIn = nil
	return <-r.hashOut
}

// end checks the whole content read against the file's hash.
func (r *Reader) end() error {
	r.closeStream()
	r.cur = nil
	want, _ := HashFromBytes(r.info.GetSha256())
	if got := r.stopHash(); got != want {
		return errs.New(errs.KindObjectLost, want.String(), "file %s: the bytes read hash to %s although every block's checksum matched: a replica was altered, and what was read is not the file", want, got)
	}
	return io.EOF
}

// connect opens a stream at the verified offset on the next replica.
func (r *Reader) connect() error {
	for {
		if len(r.queue) == 0 {
			if err := r.relookup(); err != nil {
				return err
			}
		}
		rep := r.queue[0]
		r.queue = r.queue[1:]
		r.tried[rep.GetAddress()] = true
		r.cur = rep
		c, err := r.c.raylet(rep.GetAddress())
		if err != nil {
			r.fails = append(r.fails, Failover{From: rep.GetAddress(), Offset: r.v.offset(), Err: err, At: time.Now()})
			continue
		}
		sctx, cancel := context.WithCancel(r.ctx)
		st, err := c.ReadFile(sctx, &pb.ReadFileRequest{Sha256: r.info.GetSha256(), Offset: r.v.offset(), BlockSize: r.info.GetBlockSize()}, grpc.ForceCodecV2(Codec{}))
		if err != nil {
			cancel()
			r.fails = append(r.fails, Failover{From: rep.GetAddress(), Offset: r.v.offset(), Err: err, At: time.Now()})
			continue
		}
		r.stream, r.scancel = st, cancel
		return nil
	}
}

// relookup asks the head for the file's replicas again (they may have been
// repaired) and queues those not tried yet.
func (r *Reader) relookup() error {
	h, _ := HashFromBytes(r.info.GetSha256())
	var last error
	if n := len(r.fails); n > 0 {
		last = r.fails[n-1].Err
	}
	if r.relooks < 3 {
		r.relooks++
		resp, err := r.c.index.LookupFile(r.ctx, &pb.LookupFileRequest{Sha256: r.info.GetSha256()})
		if err != nil {
			return err
		}
		r.tried = map[string]bool{} // a repaired replica may be on a node tried before
		r.order(resp.GetInfo().GetReplicas())
		if len(r.queue) > 0 {
			return nil
		}
	}
	return errs.New(errs.KindObjectLost, h.String(), "file %s: no replica could be read past byte %d of %d (last error: %v)", h, r.v.offset(), r.info.GetSize(), last)
}

func (r *Reader) reportCorrupt() {
	ctx, cancel := context.WithTimeout(r.ctx, 5*time.Second)
	defer cancel()
	r.c.index.ReportFileCorrupt(ctx, &pb.ReportFileCorruptRequest{Sha256: r.info.GetSha256(), NodeId: r.cur.GetNodeId()})
}

func (r *Reader) closeStream() {
	if r.scancel != nil {
		r.scancel()
	}
	r.stream, r.scancel = nil, nil
}

// Close ends the read.
func (r *Reader) Close() error {
	r.closeStream()
	r.stopHash()
	r.cancel()
	if r.err == nil {
		r.err = errs.New(errs.KindInvalidArgument, "", "read of a closed file")
	}
	return nil
}

// DialVia makes a Client that puts through the raylet at rayletAddr (or,
// given a head that serves a node of its own, through that node) and asks
// that raylet where its head is.
func DialVia(ctx context.Context, rayletAddr, token string) (*Client, error) {
	if list := rpc.SplitAddresses(rayletAddr); len(list) > 1 {
		// Several (the nodes of a cluster's heads): the first that answers.
		var err error
		for _, a := range list {
			var c *Client
			if c, err = DialVia(ctx, a, token); err == nil {
				return c, nil
			}
		}
		return nil, err
	}
	cc, err := rpc.Dial(rayletAddr, token)
	if err != nil {
		return nil, err
	}
	defer cc.Close()
	info, err := rpc.NewNodeClient(cc).GetNodeInfo(ctx, &pb.GetNodeInfoRequest{})
	if err != nil {
		return nil, fmt.Errorf("no goray raylet answers at %s (files are put through a raylet; pass the address of one): %w", rayletAddr, err)
	}
	head := info.GetHeadAddress()
	if head == "" {
		head = rayletAddr
	}
	return Dial(head, rayletAddr, token, info.GetNodeId())
}
