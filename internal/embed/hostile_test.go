package embed

import (
	"bytes"
	"crypto/sha256"
	"os"
	"runtime"
	"strings"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/goray/goray/internal/core"
	"github.com/goray/goray/internal/rpc"
	pb "github.com/goray/goray/proto/goray/v1"
)

// Hostile input to the head's ClientService (issue 14): a MessagePack
// value nested millions deep is refused, not recursed into; Put streams
// that declare 1 GiB and send a byte hold what they received, not what
// they declared; after each the head still serves.
func TestClientServiceHostileInput(t *testing.T) {
	cfg := Config{Head: true}
	cfg.Resources, cfg.Logger, cfg.Stderr = map[string]float64{"CPU": 1}, testLogger(t), t.Output()
	s, err := Start(callCtx(t), cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	cc, err := rpc.Dial(s.Address(), s.Token())
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	client := pb.NewClientServiceClient(cc)
	hs, err := client.Handshake(callCtx(t), &pb.HandshakeRequest{ProtocolVersion: 1})
	if err != nil {
		t.Fatal(err)
	}
	// A namespace to put into: a deployment of a binary no worker will
	// ever run (nothing here calls a function).
	ns := "hostile"
	bin := []byte("not a program: only puts go to this namespace")
	sum := sha256.Sum256(bin)
	dep, err := pb.NewDeployServiceClient(cc).DeployJob(callCtx(t), &pb.DeployJobRequest{Namespace: ns, BinarySha256: sum[:], BinarySize: uint64(len(bin)), Entrypoint: "none",
		Registry: &pb.Registry{Functions: []*pb.FunctionInfo{{Name: "square", ArgTypes: []string{"int64"}}}}})
	if err != nil {
		t.Fatal(err)
	}
	if !dep.GetBinaryPresent() {
		f, err := os.CreateTemp(t.TempDir(), "bin")
		if err == nil {
			_, err = f.Write(bin)
		}
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		if err := core.UploadJobBinary(callCtx(t), rpc.NewHeadClient(cc), f, sum[:], int64(len(bin))); err != nil {
			t.Fatal(err)
		}
	}
	put := func(data []byte) (*pb.PutResponse, error) {
		st, err := client.Put(callCtx(t))
		if err != nil {
			return nil, err
		}
		chunk := int(hs.GetChunkSize())
		for off := 0; off == 0 || off < len(data); off += chunk {
			m := &pb.PutRequest{Chunk: data[off:min(off+chunk, len(data))]}
			if off == 0 {
				m.Namespace, m.Encoding, m.Size = ns, pb.Encoding_ENCODING_MSGPACK, uint64(len(data))
			}
			if err := st.Send(m); err != nil {
				break // the head refused; CloseAndRecv says why
			}
		}
		return st.CloseAndRecv()
	}
	serves := func(after string) {
		t.Helper()
		resp, err := put([]byte{0x93, 0x01, 0x02, 0x03})
		if err != nil || resp.GetRef() == nil {
			t.Fatalf("a good put after %s: %v", after, err)
		}
	}

	deep := append(bytes.Repeat([]byte{0x91}, 6<<20), 0xc0)
	if _, err := put(deep); status.Code(err) != codes.InvalidArgument || !strings.Contains(err.Error(), "nest more than") {
		t.Fatalf("put of a value nested 6 M deep: got %v, want InvalidArgument saying it nests too deep", err)
	}
	serves("the deep value")

	var before runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	var streams []pb.ClientService_PutClient
	for range 3 {
		st, err := client.Put(callCtx(t))
		if err != nil {
			t.Fatal(err)
		}
		if err := st.Send(&pb.PutRequest{Namespace: ns, Encoding: pb.Encoding_ENCODING_RAW, Size: hs.GetMaxObjectSize(), Chunk: []byte{1}}); err != nil {
			t.Fatal(err)
		}
		streams = append(streams, st)
	}
	serves("three streams that declared 1 GiB each") // their first messages were read meanwhile
	var during runtime.MemStats
	runtime.ReadMemStats(&during)
	if grew := int64(during.HeapAlloc) - int64(before.HeapAlloc); grew > 256<<20 {
		t.Errorf("three open puts that declared %d bytes and sent 1 each: the heap grew by %d bytes, want it to follow the bytes received", hs.GetMaxObjectSize(), grew)
	}
	for _, st := range streams {
		if _, err := st.CloseAndRecv(); status.Code(err) != codes.InvalidArgument {
			t.Errorf("a put that sent 1 of its declared bytes: got %v, want InvalidArgument", err)
		}
	}
	serves("the short puts")

	// Names are echoed in errors up to a bound: a 1 MiB and a 15 MiB
	// function name get a short NOT_FOUND, not a reply too large to send.
	for _, n := range []int{1 << 20, 15 << 20} {
		_, err := client.CallFunction(callCtx(t), &pb.CallFunctionRequest{Namespace: ns, Function: strings.Repeat("f", n)})
		st := status.Convert(err)
		if st.Code() != codes.NotFound || len(st.Message()) > 4<<10 || !strings.Contains(st.Message(), "bytes in all") {
			t.Errorf("call of a function with a %d-byte name: got %v, %d-byte message; want NOT_FOUND with a short message", n, st.Code(), len(st.Message()))
		}
	}
	serves("the long names")
}
