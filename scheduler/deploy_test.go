package scheduler

import (
	"bytes"
	"context"
	"crypto/sha256"
	"testing"

	pb "github.com/goray/goray/proto/goray/v1"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

func TestDeployer(t *testing.T) {
	s, err := New(Config{DataDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	d := NewDeployer(s)
	ctx := context.Background()
	sum := sha256.Sum256([]byte("binary"))
	reg := &pb.Registry{Functions: []*pb.FunctionInfo{{Name: "square", ArgTypes: []string{"int64"}}}}

	first, err := d.DeployJob(ctx, &pb.DeployJobRequest{Namespace: "svc", BinarySha256: sum[:], BinarySize: 6, Entrypoint: "bin", Registry: reg})
	if err != nil {
		t.Fatal(err)
	}
	if first.GetBinaryPresent() || len(first.GetReplacedJobId()) != 0 {
		t.Fatalf("first deploy: got %v, want binary missing and nothing replaced", first)
	}
	second, err := d.DeployJob(ctx, &pb.DeployJobRequest{Namespace: "svc", BinarySha256: sum[:], BinarySize: 6, Entrypoint: "bin", Registry: reg})
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(second.GetReplacedJobId(), first.GetJobId()) {
		t.Fatalf("second deploy replaced %x, want %x", second.GetReplacedJobId(), first.GetJobId())
	}
	old, err := s.GetJob(ctx, &pb.GetJobRequest{JobId: first.GetJobId()})
	if err != nil {
		t.Fatal(err)
	}
	if !old.GetJob().GetFinished() {
		t.Fatal("the replaced deployment's job is not finished")
	}
	cur, err := s.GetJob(ctx, &pb.GetJobRequest{JobId: second.GetJobId()})
	if err != nil {
		t.Fatal(err)
	}
	if cur.GetJob().GetFinished() || cur.GetJob().GetNamespace() != "svc" {
		t.Fatalf("deployed job: got %v, want an unfinished job of namespace svc", cur.GetJob())
	}

	list, err := d.ListDeployments(ctx, &pb.ListDeploymentsRequest{Namespace: "svc"})
	if err != nil {
		t.Fatal(err)
	}
	if n := len(list.GetDeployments()); n != 1 || !bytes.Equal(list.GetDeployments()[0].GetJobId(), second.GetJobId()) {
		t.Fatalf("ListDeployments(svc): got %v, want the second deployment only", list)
	}
	if got := list.GetDeployments()[0].GetRegistry().GetFunctions()[0].GetName(); got != "square" {
		t.Fatalf("registry: got function %q, want square", got)
	}
	if list, _ := d.ListDeployments(ctx, &pb.ListDeploymentsRequest{Namespace: "other"}); len(list.GetDeployments()) != 0 {
		t.Fatalf("ListDeployments(other): got %v, want none", list)
	}

	for _, req := range []*pb.DeployJobRequest{
		{BinarySha256: sum[:], BinarySize: 6},                      // no namespace
		{Namespace: "svc", BinarySha256: []byte{1}, BinarySize: 6}, // bad hash
		{Namespace: "svc", BinarySha256: sum[:], BinarySize: 6, Registry: &pb.Registry{Functions: []*pb.FunctionInfo{{}}}},
	} {
		if _, err := d.DeployJob(ctx, req); status.Code(err) != codes.InvalidArgument {
			t.Errorf("DeployJob(%v): got %v, want InvalidArgument", req, err)
		}
	}
}
