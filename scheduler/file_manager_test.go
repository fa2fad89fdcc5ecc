package scheduler

import (
	"context"
	"errors"
	"log/slog"
	"path/filepath"
	"slices"
	"sync"
	"testing"

	"google.golang.org/grpc"

	"github.com/goray/goray/internal/errs"
	"github.com/goray/goray/internal/ids"
	pb "github.com/goray/goray/proto/goray/v1"
)

// fakeFileRaylets records the file calls the manager makes to raylets; a
// raylet whose address is in fail fails them.
type fakeFileRaylets struct {
	mu         sync.Mutex
	replicated []fakeReplicate // guarded by mu
	deleted    []string        // guarded by mu: "addr"
	fail       map[string]bool // guarded by mu
}

type fakeReplicate struct {
	addr    string
	sources []string
	replace bool
}

func (f *fakeFileRaylets) files(addr string) (pb.FileStoreServiceClient, error) {
	return fakeFileClient{f: f, addr: addr}, nil
}

type fakeFileClient struct {
	f    *fakeFileRaylets
	addr string
}

func (c fakeFileClient) PutFile(context.Context, ...grpc.CallOption) (grpc.ClientStreamingClient[pb.PutFileRequest, pb.PutFileResponse], error) {
	return nil, errors.New("not in the fake")
}

func (c fakeFileClient) ReadFile(context.Context, *pb.ReadFileRequest, ...grpc.CallOption) (grpc.ServerStreamingClient[pb.ReadFileResponse], error) {
	return nil, errors.New("not in the fake")
}

func (c fakeFileClient) PushFile(context.Context, ...grpc.CallOption) (grpc.ClientStreamingClient[pb.PushFileRequest, pb.PushFileResponse], error) {
	return nil, errors.New("not in the fake")
}

func (c fakeFileClient) ReplicateFile(_ context.Context, req *pb.ReplicateFileRequest, _ ...grpc.CallOption) (*pb.ReplicateFileResponse, error) {
	c.f.mu.Lock()
	defer c.f.mu.Unlock()
	if c.f.fail[c.addr] {
		return nil, errs.New(errs.KindUnavailable, "", "fake: %s is down", c.addr)
	}
	c.f.replicated = append(c.f.replicated, fakeReplicate{addr: c.addr, sources: req.GetSources(), replace: req.GetReplace()})
	return &pb.ReplicateFileResponse{}, nil
}

func (c fakeFileClient) DeleteFile(context.Context, *pb.DeleteFileRequest, ...grpc.CallOption) (*pb.DeleteFileResponse, error) {
	c.f.mu.Lock()
	defer c.f.mu.Unlock()
	c.f.deleted = append(c.f.deleted, c.addr)
	return &pb.DeleteFileResponse{}, nil
}

type fileFixture struct {
	m      *fileManager
	nodes  *fakeNodes
	ray    *fakeFileRaylets
	ids    []ids.NodeID
	byAddr map[string]ids.NodeID
}

func newFileFixture(t *testing.T, n int, st Store) *fileFixture {
	t.Helper()
	f := &fileFixture{nodes: newFakeNodes(newChangeFeed()), ray: &fakeFileRaylets{fail: map[string]bool{}}, byAddr: map[string]ids.NodeID{}}
	for i := range n {
		addr := string(rune('a'+i)) + ":1"
		id := f.nodes.add(addr, map[string]float64{"CPU": 1})
		f.ids = append(f.ids, id)
		f.byAddr[addr] = id
	}
	f.m = newFileManager(t.Context(), slog.New(slog.DiscardHandler), st, f.nodes, f.ray)
	return f
}

func testHash(b byte) []byte {
	h := make([]byte, 32)
	h[0] = b
	return h
}

// commit commits a 3-block file held by the given nodes.
func (f *fileFixture) commit(t *testing.T, h []byte, wanted uint32, name string, holders ...ids.NodeID) *pb.FileInfo {
	t.Helper()
	info := &pb.FileInfo{Sha256: h, Size: 3 << 20, BlockSize: 1 << 20, ReplicasWanted: wanted,
		BlockCrc32C: []uint32{1, 2, 3}}
	for _, id := range holders {
		info.Replicas = append(info.Replicas, &pb.FileReplica{NodeId: id[:]})
	}
	resp, err := f.m.CommitFile(t.Context(), &pb.CommitFileRequest{Info: info, Name: name})
	if err != nil {
		t.Fatal(err)
	}
	return resp.GetInfo()
}

func replicaNodes(info *pb.FileInfo) []ids.NodeID {
	var out []ids.NodeID
	for _, r := range info.GetReplicas() {
		out = append(out, ids.NodeID(r.GetNodeId()))
	}
	return out
}

func TestFilePlace(t *testing.T) {
	f := newFileFixture(t, 4, NewMemoryStore())
	// Node 1 holds two files, node 2 one: a new file's replicas go to the
	// least loaded nodes other than the holder.
	f.commit(t, testHash(10), 1, "", f.ids[1])
	f.commit(t, testHash(11), 1, "", f.ids[1])
	f.commit(t, testHash(12), 1, "", f.ids[2])
	tests := []struct {
		name     string
		replicas uint32
		exclude  []ids.NodeID
		want     []ids.NodeID
	}{
		{"one more", 2, nil, []ids.NodeID{f.ids[3]}},
		{"two more, least loaded first", 3, nil, []ids.NodeID{f.ids[3], f.ids[2]}},
		{"more than there are nodes", 9, nil, []ids.NodeID{f.ids[3], f.ids[2], f.ids[1]}},
		{"excluded nodes left out", 9, []ids.NodeID{f.ids[3]}, []ids.NodeID{f.ids[2], f.ids[1]}},
		{"just the holder", 1, nil, nil},
	}
	// A put that forwards as it receives places before it knows the hash.
	if resp, err := f.m.PlaceFile(t.Context(), &pb.PlaceFileRequest{Replicas: 2, HolderNodeId: f.ids[0][:]}); err != nil || len(resp.GetTargets()) != 1 {
		t.Fatalf("PlaceFile without a hash: got %v, %v; want one target", resp, err)
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			req := &pb.PlaceFileRequest{Sha256: testHash(1), Replicas: tt.replicas, HolderNodeId: f.ids[0][:]}
			for _, id := range tt.exclude {
				req.ExcludeNodeIds = append(req.ExcludeNodeIds, id[:])
			}
			resp, err := f.m.PlaceFile(t.Context(), req)
			if err != nil {
				t.Fatal(err)
			}
			if got := replicaNodes(&pb.FileInfo{Replicas: resp.GetTargets()}); !slices.Equal(got, tt.want) {
				t.Fatalf("targets: got %v, want %v", got, tt.want)
			}
		})
	}
	if _, err := f.m.PlaceFile(t.Context(), &pb.PlaceFileRequest{Sha256: testHash(1), Replicas: 2, HolderNodeId: []byte{1}}); !errors.Is(err, errs.ErrInvalidArgument) {
		t.Fatalf("PlaceFile with a malformed holder: got %v, want ErrInvalidArgument", err)
	}
}

func TestFileLookupAndRemove(t *testing.T) {
	f := newFileFixture(t, 2, NewMemoryStore())
	h := testHash(7)
	f.commit(t, h, 2, "x/one", f.ids[0], f.ids[1])
	f.commit(t, h, 1, "x/two", f.ids[0])
	got, err := f.m.LookupFile(t.Context(), &pb.LookupFileRequest{Name: "x/two"})
	if err != nil {
		t.Fatal(err)
	}
	if info := got.GetInfo(); len(info.GetReplicas()) != 2 || info.GetReplicasWanted() != 2 || !slices.Equal(info.GetNames(), []string{"x/one", "x/two"}) || len(info.GetBlockCrc32C()) != 3 {
		t.Fatalf("lookup: got %v, want 2 replicas of 2 wanted, both names, 3 block checksums", info)
	}
	for _, tt := range []struct {
		name string
		req  *pb.LookupFileRequest
		want error
	}{
		{"unknown hash", &pb.LookupFileRequest{Sha256: testHash(8)}, errs.ErrNotFound},
		{"unknown name", &pb.LookupFileRequest{Name: "nope"}, errs.ErrNotFound},
		{"short hash", &pb.LookupFileRequest{Sha256: []byte{1}}, errs.ErrInvalidArgument},
		{"neither", &pb.LookupFileRequest{}, errs.ErrInvalidArgument},
		{"both", &pb.LookupFileRequest{Sha256: h, Name: "x/one"}, errs.ErrInvalidArgument},
	} {
		if _, err := f.m.LookupFile(t.Context(), tt.req); !errors.Is(err, tt.want) {
			t.Errorf("%s: got %v, want %v", tt.name, err, tt.want)
		}
	}
	// Removing one of two names keeps the file; the last one removes it and
	// deletes its replicas.
	if resp, err := f.m.RemoveFile(t.Context(), &pb.RemoveFileRequest{Name: "x/one"}); err != nil || resp.GetRemovedContent() {
		t.Fatalf("remove the first name: got %v, %v; want the content kept", resp, err)
	}
	if resp, err := f.m.RemoveFile(t.Context(), &pb.RemoveFileRequest{Name: "x/two"}); err != nil || !resp.GetRemovedContent() {
		t.Fatalf("remove the last name: got %v, %v; want the content removed", resp, err)
	}
	if _, err := f.m.LookupFile(t.Context(), &pb.LookupFileRequest{Sha256: h}); !errors.Is(err, errs.ErrNotFound) {
		t.Fatalf("lookup after remove: got %v, want ErrNotFound", err)
	}
	if got := len(f.ray.deleted); got != 2 {
		t.Fatalf("replicas deleted: got %d, want 2", got)
	}
}

func TestFileRepair(t *testing.T) {
	f := newFileFixture(t, 4, NewMemoryStore())
	h := testHash(9)
	f.commit(t, h, 3, "", f.ids[0], f.ids[1], f.ids[2])
	f.m.repair()
	if len(f.ray.replicated) != 0 {
		t.Fatalf("copies of a file with its replicas: got %v, want none", f.ray.replicated)
	}
	// Node 1 dies: the file is copied to node 3 from the live replicas.
	f.nodes.kill(f.ids[1])
	f.m.nodeDied(f.ids[1])
	f.m.repair()
	if len(f.ray.replicated) != 1 || f.byAddr[f.ray.replicated[0].addr] != f.ids[3] || len(f.ray.replicated[0].sources) != 2 {
		t.Fatalf("copies after a death: got %+v, want one to node d from 2 sources", f.ray.replicated)
	}
	info, _ := f.m.LookupFile(t.Context(), &pb.LookupFileRequest{Sha256: h})
	if got := replicaNodes(info.GetInfo()); len(got) != 3 || slices.Contains(got, f.ids[1]) {
		t.Fatalf("replicas after the repair: got %v, want 3 without the dead node", got)
	}
	// A corrupt replica is replaced in place from the others.
	f.ray.replicated = nil
	if _, err := f.m.ReportFileCorrupt(t.Context(), &pb.ReportFileCorruptRequest{Sha256: h, NodeId: f.ids[2][:]}); err != nil {
		t.Fatal(err)
	}
	f.m.repair()
	if len(f.ray.replicated) != 1 || f.byAddr[f.ray.replicated[0].addr] != f.ids[2] || !f.ray.replicated[0].replace || slices.Contains(f.ray.replicated[0].sources, "c:1") {
		t.Fatalf("copies after a corrupt report: got %+v, want one replacing node c's from the others", f.ray.replicated)
	}
	// With no node left to copy to, the file stays short and nothing fails.
	f.ray.replicated = nil
	f.nodes.kill(f.ids[3])
	f.m.nodeDied(f.ids[3])
	f.m.repair()
	if len(f.ray.replicated) != 0 {
		t.Fatalf("copies with no spare node: got %+v, want none", f.ray.replicated)
	}
}

func TestFileReportNodeFiles(t *testing.T) {
	f := newFileFixture(t, 3, NewMemoryStore())
	short, full, listed := testHash(1), testHash(2), testHash(3)
	f.commit(t, short, 3, "", f.ids[0])
	f.commit(t, full, 1, "", f.ids[0])
	f.commit(t, listed, 2, "", f.ids[0], f.ids[2])
	resp, err := f.m.ReportNodeFiles(t.Context(), &pb.ReportNodeFilesRequest{NodeId: f.ids[2][:], Files: []*pb.LocalFile{
		{Sha256: short, Size: 3 << 20},        // adopted
		{Sha256: full, Size: 1},               // wrong size: deleted
		{Sha256: testHash(99), Size: 3 << 20}, // unknown (removed meanwhile): deleted
	}})
	if err != nil {
		t.Fatal(err)
	}
	if got := resp.GetDeleteSha256(); len(got) != 2 {
		t.Fatalf("to delete: got %d, want 2 (wrong size, unknown)", len(got))
	}
	s, _ := f.m.LookupFile(t.Context(), &pb.LookupFileRequest{Sha256: short})
	if !slices.Contains(replicaNodes(s.GetInfo()), f.ids[2]) {
		t.Fatalf("the short file's replicas: got %v, want node c's adopted", replicaNodes(s.GetInfo()))
	}
	l, _ := f.m.LookupFile(t.Context(), &pb.LookupFileRequest{Sha256: listed})
	if slices.Contains(replicaNodes(l.GetInfo()), f.ids[2]) {
		t.Fatalf("a replica node c no longer has: got %v, want it dropped", replicaNodes(l.GetInfo()))
	}
}

func TestFileIndexPersists(t *testing.T) {
	path := filepath.Join(t.TempDir(), "head.db")
	st, err := OpenBoltStore(path)
	if err != nil {
		t.Fatal(err)
	}
	f := newFileFixture(t, 2, st)
	h := testHash(5)
	f.commit(t, h, 2, "keep/me", f.ids[0], f.ids[1])
	st.Close()
	st, err = OpenBoltStore(path)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	m := newFileManager(t.Context(), slog.New(slog.DiscardHandler), st, f.nodes, f.ray)
	resp, err := m.LookupFile(t.Context(), &pb.LookupFileRequest{Name: "keep/me"})
	if err != nil {
		t.Fatalf("lookup after reopening the store: %v", err)
	}
	if info := resp.GetInfo(); len(info.GetReplicas()) != 2 || info.GetSize() != 3<<20 || len(info.GetBlockCrc32C()) != 3 || info.GetReplicasWanted() != 2 {
		t.Fatalf("entry after reopening: got %v, want 2 replicas of a 3-block file", info)
	}
}
