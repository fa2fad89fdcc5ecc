package scheduler

import (
	"context"
	"encoding/hex"
	"log/slog"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/goray/goray/internal/ids"
	pb "github.com/goray/goray/proto/goray/v1"
)

// fileRepairInterval is how often the file manager looks for files with
// fewer replicas than wanted (it also looks at once when a node dies or a
// reader reports a corrupt replica).
const fileRepairInterval = time.Second

// fileCallTimeout bounds the head's calls to raylets about files but
// copies; fileCopyTimeout bounds one replica copy.
const (
	fileCallTimeout = 10 * time.Second
	fileCopyTimeout = 30 * time.Minute
)

// fileNodes is what the file manager asks of the node manager.
type fileNodes interface {
	aliveNodes() []*NodeRecord
	aliveAddress(id ids.NodeID) (string, bool)
}

// fileRaylets is how the file manager reaches raylets' FileStoreService.
type fileRaylets interface {
	files(addr string) (pb.FileStoreServiceClient, error)
}

// fileManager is the head's file index (FileIndexService): files by hash
// (size, block checksums, wanted replica count, the nodes holding a replica)
// and names, persisted through a FileIndexStore; and the repair loop, which
// brings files that lost replicas (a dead node, a corrupt copy) back to
// their wanted count on other alive nodes.
//
// gRPC handlers, the node manager's death callback and the repair loop
// call it. mu guards files, names and corrupt, and the store; it is held
// while the node manager (a leaf) is asked for alive nodes, never across a
// call to a raylet.
type fileManager struct {
	ctx     context.Context
	log     *slog.Logger
	nodes   fileNodes
	raylets fileRaylets
	kick    chan struct{}

	mu      sync.Mutex
	store   FileIndexStore           // guarded by mu
	files   map[[32]byte]*FileRecord // guarded by mu
	names   map[string][32]byte      // guarded by mu
	corrupt map[fileReplicaKey]bool  // guarded by mu: replicas a reader found corrupt
}

type fileReplicaKey struct {
	hash [32]byte
	node ids.NodeID
}

var _ pb.FileIndexServiceServer = (*fileManager)(nil)

func newFileManager(ctx context.Context, log *slog.Logger, st Store, nodes fileNodes, raylets fileRaylets) *fileManager {
	fs, ok := st.(FileIndexStore)
	if !ok {
		log.Warn("the head's store keeps no file index: the file index lives in memory only")
		fs = NewMemoryStore()
	}
	m := &fileManager{ctx: ctx, log: log, nodes: nodes, raylets: raylets, kick: make(chan struct{}, 1), store: fs,
		files: map[[32]byte]*FileRecord{}, names: map[string][32]byte{}, corrupt: map[fileReplicaKey]bool{}}
	recs, names, err := fs.LoadFiles()
	if err != nil {
		log.Error("load the file index", "err", err)
	}
	for _, r := range recs {
		m.files[r.Hash] = r
	}
	for n, h := range names {
		m.names[n] = h
	}
	return m
}

func (m *fileManager) wake() {
	select {
	case m.kick <- struct{}{}:
	default:
	}
}

// run repairs files until ctx ends.
func (m *fileManager) run() {
	t := time.NewTicker(fileRepairInterval)
	defer t.Stop()
	for {
		select {
		case <-m.ctx.Done():
			return
		case <-t.C:
		case <-m.kick:
		}
		m.repair()
	}
}

func fileHash(b []byte) ([32]byte, error) {
	if len(b) != 32 {
		return [32]byte{}, invalid("malformed file hash: want 32 bytes (a SHA-256), got %d", len(b))
	}
	return [32]byte(b), nil
}

func hexHash(h [32]byte) string { return hex.EncodeToString(h[:]) }

// infoLocked is r's entry for the wire, with its alive replicas.
func (m *fileManager) infoLocked(r *FileRecord, blocks bool) *pb.FileInfo {
	info := &pb.FileInfo{Sha256: r.Hash[:], Size: r.Size, BlockSize: r.BlockSize, ReplicasWanted: r.Wanted, CreatedUnixMs: r.Created.UnixMilli()}
	if blocks {
		info.BlockCrc32C = slices.Clone(r.Blocks)
	}
	for _, n := range r.Nodes {
		if addr, ok := m.nodes.aliveAddress(n); ok {
			info.Replicas = append(info.Replicas, &pb.FileReplica{NodeId: n[:], Address: addr})
		}
	}
	for name, h := range m.names {
		if h == r.Hash {
			info.Names = append(info.Names, name)
		}
	}
	sort.Strings(info.Names)
	return info
}

func (m *fileManager) persistLocked(r *FileRecord) {
	if err := m.store.PutFileRecord(r); err != nil {
		m.log.Error("file index: store a file", "file", hexHash(r.Hash), "err", err)
	}
}

// PlaceFile chooses the nodes for a put's other replicas: alive nodes
// other than the holder, those already holding the file first, then those
// holding the fewest files.
func (m *fileManager) PlaceFile(_ context.Context, req *pb.PlaceFileRequest) (*pb.PlaceFileResponse, error) {
	var h [32]byte
	if len(req.GetSha256()) > 0 {
		var err error
		if h, err = fileHash(req.GetSha256()); err != nil {
			return nil, err
		}
	}
	holder, err := ids.ParseNodeID(req.GetHolderNodeId())
	if err != nil {
		return nil, invalid("PlaceFile: %v", err)
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	var have []ids.NodeID
	if r := m.files[h]; r != nil {
		have = r.Nodes
	}
	exclude := []ids.NodeID{holder}
	for _, b := range req.GetExcludeNodeIds() {
		if id, err := ids.ParseNodeID(b); err == nil {
			exclude = append(exclude, id)
		}
	}
	targets := m.chooseLocked(int(req.GetReplicas())-1, exclude, have)
	return &pb.PlaceFileResponse{Targets: targets}, nil
}

// chooseLocked picks up to n alive nodes not in exclude, those in prefer
// first, then the least loaded.
func (m *fileManager) chooseLocked(n int, exclude, prefer []ids.NodeID) []*pb.FileReplica {
	if n <= 0 {
		return nil
	}
	load := map[ids.NodeID]int{}
	for _, r := range m.files {
		for _, id := range r.Nodes {
			load[id]++
		}
	}
	alive := m.nodes.aliveNodes()
	var cands []*NodeRecord
	for _, a := range alive {
		if !slices.Contains(exclude, a.ID) {
			cands = append(cands, a)
		}
	}
	rank := func(a *NodeRecord) int {
		if slices.Contains(prefer, a.ID) {
			return -1
		}
		return load[a.ID]
	}
	sort.SliceStable(cands, func(i, j int) bool { return rank(cands[i]) < rank(cands[j]) })
	var out []*pb.FileReplica
	for _, a := range cands[:min(n, len(cands))] {
		out = append(out, &pb.FileReplica{NodeId: a.ID[:], Address: a.Address})
	}
	// A node preferred (it holds the file) is excluded above when it is the
	// holder; the others already hold it and copy nothing.
	return out
}

// CommitFile records a stored file, merging with an entry of the same
// hash (the wanted count becomes the larger one), and maps its name.
func (m *fileManager) CommitFile(_ context.Context, req *pb.CommitFileRequest) (*pb.CommitFileResponse, error) {
	info := req.GetInfo()
	h, err := fileHash(info.GetSha256())
	if err != nil {
		return nil, err
	}
	r := &FileRecord{Hash: h, Size: info.GetSize(), BlockSize: info.GetBlockSize(), Wanted: max(info.GetReplicasWanted(), 1), Created: time.Now()}
	if bs := r.BlockSize; bs == 0 || len(info.GetBlockCrc32C()) != int((r.Size+uint64(bs)-1)/uint64(bs)) {
		return nil, invalid("CommitFile: %d block checksums for %d bytes in blocks of %d", len(info.GetBlockCrc32C()), r.Size, bs)
	}
	r.Blocks = slices.Clone(info.GetBlockCrc32C())
	for _, rep := range info.GetReplicas() {
		id, err := ids.ParseNodeID(rep.GetNodeId())
		if err != nil {
			return nil, invalid("CommitFile: %v", err)
		}
		r.Nodes = append(r.Nodes, id)
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if old := m.files[h]; old != nil {
		old.Wanted = max(old.Wanted, r.Wanted)
		for _, n := range r.Nodes {
			if !slices.Contains(old.Nodes, n) {
				old.Nodes = append(old.Nodes, n)
			}
		}
		r = old
	}
	m.files[h] = r
	m.persistLocked(r)
	if name := req.GetName(); name != "" {
		m.names[name] = h
		if err := m.store.PutFileName(name, h); err != nil {
			m.log.Error("file index: store a name", "name", name, "err", err)
		}
	}
	m.wake()
	return &pb.CommitFileResponse{Info: m.infoLocked(r, false)}, nil
}

// lookupLocked finds a file by hash or name.
func (m *fileManager) lookupLocked(hb []byte, name string) (*FileRecord, error) {
	switch {
	case len(hb) > 0 && name != "":
		return nil, invalid("look a file up by hash or by name, not both")
	case name != "":
		h, ok := m.names[name]
		if !ok {
			return nil, notFound(name, "no file is named %q (goray files ls lists the names)", name)
		}
		if r := m.files[h]; r != nil {
			return r, nil
		}
		return nil, notFound(name, "file name %q maps to %s, which is not stored", name, hexHash(h))
	case len(hb) == 0:
		return nil, invalid("give a file's hash or name")
	}
	h, err := fileHash(hb)
	if err != nil {
		return nil, err
	}
	r := m.files[h]
	if r == nil {
		return nil, notFound(hexHash(h), "no file has hash %s", hexHash(h))
	}
	return r, nil
}

// LookupFile returns a file's entry with its block checksums and alive
// replicas.
func (m *fileManager) LookupFile(_ context.Context, req *pb.LookupFileRequest) (*pb.LookupFileResponse, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	r, err := m.lookupLocked(req.GetSha256(), req.GetName())
	if err != nil {
		return nil, err
	}
	return &pb.LookupFileResponse{Info: m.infoLocked(r, true)}, nil
}

// ListFiles lists files by hash, or the named ones under a prefix.
func (m *fileManager) ListFiles(_ context.Context, req *pb.ListFilesRequest) (*pb.ListFilesResponse, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	resp := &pb.ListFilesResponse{}
	seen := map[[32]byte]bool{}
	for name, h := range m.names {
		if req.GetPrefix() != "" && !strings.HasPrefix(name, req.GetPrefix()) {
			continue
		}
		if r := m.files[h]; r != nil && !seen[h] {
			seen[h] = true
			resp.Files = append(resp.Files, m.infoLocked(r, false))
		}
	}
	if req.GetPrefix() == "" {
		for h, r := range m.files {
			if !seen[h] {
				resp.Files = append(resp.Files, m.infoLocked(r, false))
			}
		}
	}
	sort.Slice(resp.Files, func(i, j int) bool {
		a, b := resp.Files[i], resp.Files[j]
		an, bn := strings.Join(a.GetNames(), ","), strings.Join(b.GetNames(), ",")
		if an != bn {
			return an < bn
		}
		return string(a.GetSha256()) < string(b.GetSha256())
	})
	return resp, nil
}

// RemoveFile removes a name (and the file when no other name maps to it)
// or a file by hash with its names, and deletes the alive replicas; a dead
// node's replica is deleted when the node reports it on its return.
func (m *fileManager) RemoveFile(ctx context.Context, req *pb.RemoveFileRequest) (*pb.RemoveFileResponse, error) {
	m.mu.Lock()
	r, err := m.lookupLocked(req.GetSha256(), req.GetName())
	if err != nil {
		m.mu.Unlock()
		return nil, err
	}
	if name := req.GetName(); name != "" {
		delete(m.names, name)
		m.store.DeleteFileName(name)
		for _, h := range m.names {
			if h == r.Hash {
				m.mu.Unlock()
				return &pb.RemoveFileResponse{}, nil
			}
		}
	} else {
		for name, h := range m.names {
			if h == r.Hash {
				delete(m.names, name)
				m.store.DeleteFileName(name)
			}
		}
	}
	delete(m.files, r.Hash)
	if err := m.store.DeleteFileRecord(r.Hash); err != nil {
		m.log.Error("file index: delete a file", "file", hexHash(r.Hash), "err", err)
	}
	var addrs []string
	for _, n := range r.Nodes {
		if a, ok := m.nodes.aliveAddress(n); ok {
			addrs = append(addrs, a)
		}
	}
	m.mu.Unlock()
	for _, a := range addrs {
		m.deleteReplica(ctx, a, r.Hash)
	}
	return &pb.RemoveFileResponse{RemovedContent: true}, nil
}

func (m *fileManager) deleteReplica(ctx context.Context, addr string, h [32]byte) {
	c, err := m.raylets.files(addr)
	if err == nil {
		ctx, cancel := context.WithTimeout(ctx, fileCallTimeout)
		_, err = c.DeleteFile(ctx, &pb.DeleteFileRequest{Sha256: h[:]})
		cancel()
	}
	if err != nil {
		m.log.Warn("delete a file replica", "file", hexHash(h), "raylet", addr, "err", err)
	}
}

// ReportFileCorrupt queues the node's replica for repair.
func (m *fileManager) ReportFileCorrupt(_ context.Context, req *pb.ReportFileCorruptRequest) (*pb.ReportFileCorruptResponse, error) {
	h, err := fileHash(req.GetSha256())
	if err != nil {
		return nil, err
	}
	id, err := ids.ParseNodeID(req.GetNodeId())
	if err != nil {
		return nil, invalid("ReportFileCorrupt: %v", err)
	}
	m.mu.Lock()
	if r := m.files[h]; r != nil && slices.Contains(r.Nodes, id) {
		m.corrupt[fileReplicaKey{h, id}] = true
		m.log.Warn("a reader found a corrupt file replica; repairing it", "file", hexHash(h), "node", id.String()[:8])
	}
	m.mu.Unlock()
	m.wake()
	return &pb.ReportFileCorruptResponse{}, nil
}

// ReportNodeFiles reconciles a (re)joined node's replicas with the index:
// one the index does not know (removed meanwhile) or whose size is wrong is
// to be deleted; one of a file short of replicas is adopted; one of a file
// with enough replicas is to be deleted. A replica the index lists on the
// node but the node does not have is dropped from the index (and repaired).
func (m *fileManager) ReportNodeFiles(_ context.Context, req *pb.ReportNodeFilesRequest) (*pb.ReportNodeFilesResponse, error) {
	id, err := ids.ParseNodeID(req.GetNodeId())
	if err != nil {
		return nil, invalid("ReportNodeFiles: %v", err)
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	resp := &pb.ReportNodeFilesResponse{}
	has := map[[32]byte]bool{}
	for _, lf := range req.GetFiles() {
		h, err := fileHash(lf.GetSha256())
		if err != nil {
			continue
		}
		r := m.files[h]
		switch {
		case r == nil || r.Size != lf.GetSize():
			resp.DeleteSha256 = append(resp.DeleteSha256, h[:])
		case slices.Contains(r.Nodes, id):
			has[h] = true
		case uint32(len(m.aliveLocked(r))) < r.Wanted:
			r.Nodes = append(r.Nodes, id)
			has[h] = true
			m.persistLocked(r)
		default:
			resp.DeleteSha256 = append(resp.DeleteSha256, h[:])
		}
	}
	for h, r := range m.files {
		if i := slices.Index(r.Nodes, id); i >= 0 && !has[h] {
			r.Nodes = slices.Delete(r.Nodes, i, i+1)
			m.persistLocked(r)
		}
	}
	m.wake()
	return resp, nil
}

// aliveLocked is r's nodes that are alive.
func (m *fileManager) aliveLocked(r *FileRecord) []ids.NodeID {
	var out []ids.NodeID
	for _, n := range r.Nodes {
		if _, ok := m.nodes.aliveAddress(n); ok {
			out = append(out, n)
		}
	}
	return out
}

// nodeDied drops the node's replicas from the index and wakes the repair
// loop.
func (m *fileManager) nodeDied(id ids.NodeID) {
	m.mu.Lock()
	n := 0
	for _, r := range m.files {
		if i := slices.Index(r.Nodes, id); i >= 0 {
			r.Nodes = slices.Delete(r.Nodes, i, i+1)
			m.persistLocked(r)
			n++
		}
	}
	m.mu.Unlock()
	if n > 0 {
		m.log.Info("a dead node held file replicas; re-replicating", "node", id.String()[:8], "files", n)
	}
	m.wake()
}

// repairJob is one copy the repair loop makes.
type repairJob struct {
	info    *pb.FileInfo
	target  *pb.FileReplica
	sources []string
	replace bool
}

// repair replaces the corrupt replicas reported and copies files short of
// replicas to other alive nodes, one copy at a time.
func (m *fileManager) repair() {
	for _, j := range m.repairJobs() {
		if m.ctx.Err() != nil {
			return
		}
		c, err := m.raylets.files(j.target.GetAddress())
		if err == nil {
			ctx, cancel := context.WithTimeout(m.ctx, fileCopyTimeout)
			_, err = c.ReplicateFile(ctx, &pb.ReplicateFileRequest{Info: j.info, Sources: j.sources, Replace: j.replace})
			cancel()
		}
		h := [32]byte(j.info.GetSha256())
		id := ids.NodeID(j.target.GetNodeId())
		m.mu.Lock()
		r := m.files[h]
		if j.replace {
			delete(m.corrupt, fileReplicaKey{h, id})
		}
		switch {
		case r == nil:
		case err != nil && j.replace:
			// The corrupt copy could not be replaced: it is no replica.
			if i := slices.Index(r.Nodes, id); i >= 0 {
				r.Nodes = slices.Delete(r.Nodes, i, i+1)
				m.persistLocked(r)
			}
		case err == nil && !slices.Contains(r.Nodes, id):
			r.Nodes = append(r.Nodes, id)
			m.persistLocked(r)
		}
		m.mu.Unlock()
		if err != nil {
			m.log.Warn("file repair failed", "file", hexHash(h), "target", j.target.GetAddress(), "replace", j.replace, "err", err)
		} else {
			m.log.Info("file replica repaired", "file", hexHash(h), "target", j.target.GetAddress(), "replace", j.replace)
		}
	}
}

// repairJobs lists the copies to make now.
func (m *fileManager) repairJobs() []repairJob {
	m.mu.Lock()
	defer m.mu.Unlock()
	var jobs []repairJob
	for k := range m.corrupt {
		r := m.files[k.hash]
		addr, ok := m.nodes.aliveAddress(k.node)
		if r == nil || !ok {
			delete(m.corrupt, k)
			continue
		}
		var srcs []string
		for _, n := range m.aliveLocked(r) {
			if n != k.node && !m.corrupt[fileReplicaKey{k.hash, n}] {
				a, _ := m.nodes.aliveAddress(n)
				srcs = append(srcs, a)
			}
		}
		if len(srcs) == 0 {
			continue // no good copy to repair from (yet)
		}
		jobs = append(jobs, repairJob{info: m.infoLocked(r, true), target: &pb.FileReplica{NodeId: k.node[:], Address: addr}, sources: srcs, replace: true})
	}
	for _, r := range m.files {
		alive := m.aliveLocked(r)
		if uint32(len(alive)) >= r.Wanted || len(alive) == 0 {
			continue
		}
		var srcs []string
		for _, n := range alive {
			if !m.corrupt[fileReplicaKey{r.Hash, n}] {
				a, _ := m.nodes.aliveAddress(n)
				srcs = append(srcs, a)
			}
		}
		if len(srcs) == 0 {
			continue
		}
		info := m.infoLocked(r, true)
		for _, t := range m.chooseLocked(int(r.Wanted)-len(alive), r.Nodes, nil) {
			jobs = append(jobs, repairJob{info: info, target: t, sources: srcs})
		}
	}
	return jobs
}

// files is a FileStoreService client for the raylet at addr, over the
// pool's cached connection.
func (p *rayletPool) files(addr string) (pb.FileStoreServiceClient, error) {
	if _, err := p.client(addr); err != nil {
		return nil, err
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	return pb.NewFileStoreServiceClient(p.conns[addr]), nil
}
