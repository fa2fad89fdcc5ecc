package raylet

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"path/filepath"
	"testing"

	"github.com/goray/goray/internal/ids"
	"github.com/goray/goray/internal/rpc"
	"github.com/goray/goray/internal/store"
	pb "github.com/goray/goray/proto/goray/v1"
)

// BenchmarkPullObject measures a chunked pull of a multi-MiB object from one
// raylet's arena to another's (in-process, over loopback gRPC): the transfer
// of cross_node_get_gigabytes without the owner's get around it.
func BenchmarkPullObject(b *testing.B) {
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	ctx := b.Context()
	head := startTestHead(b, Config{TokenFile: filepath.Join(b.TempDir(), "token"), Logger: log, Stderr: io.Discard}, headOpts{})
	node, err := Start(ctx, Config{Address: head.Address(), TokenFile: head.TokenFile(), Logger: log, Stderr: io.Discard})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(node.Stop)
	dial := func(r *Raylet) *rpc.NodeClient {
		cc, err := rpc.Dial(r.Address(), r.Token())
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { cc.Close() })
		return rpc.NewNodeClient(cc)
	}
	src, dst := dial(head), dial(node)
	job := ids.JobIDFromUint32(7)
	for _, size := range []int{8 << 20, 64 << 20} {
		data := make([]byte, size)
		for i := range data {
			data[i] = byte(i)
		}
		b.Run(fmt.Sprintf("%dMiB", size>>20), func(b *testing.B) {
			b.ReportAllocs()
			b.SetBytes(int64(size))
			for b.Loop() {
				b.StopTimer()
				id := ids.NewTaskID(job).ObjectID(1)
				a, err := src.AllocateObject(ctx, &pb.AllocateObjectRequest{ObjectId: id[:], Size: uint64(size)})
				if err != nil || !a.GetOk() {
					b.Fatalf("AllocateObject: %v, %v", a, err)
				}
				m, err := store.OpenArena(head.StoreDir())
				if err != nil {
					b.Fatal(err)
				}
				w, err := m.Region(a.GetOffset(), uint64(size))
				if err != nil {
					b.Fatal(err)
				}
				copy(w, data)
				if _, err := src.SealObject(ctx, &pb.SealObjectRequest{ObjectId: id[:], Size: uint64(size)}); err != nil {
					b.Fatal(err)
				}
				loc := &pb.ObjectLocation{NodeId: head.nodeID[:], RayletAddress: head.Address(), Size: uint64(size), InArena: true, ArenaOffset: a.GetOffset()}
				b.StartTimer()
				if _, err := dst.PullObject(context.Background(), &pb.PullObjectRequest{ObjectId: id[:], Location: loc}); err != nil {
					b.Fatal(err)
				}
				b.StopTimer()
				free := &pb.FreeObjectsRequest{ObjectIds: [][]byte{id[:]}}
				if _, err := src.FreeObjects(ctx, free); err != nil {
					b.Fatal(err)
				}
				if _, err := dst.FreeObjects(ctx, free); err != nil {
					b.Fatal(err)
				}
				b.StartTimer()
			}
		})
	}
}
