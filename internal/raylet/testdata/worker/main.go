// Command worker is a stand-in worker process for the raylet's tests: it
// serves a minimal WorkerService, registers with the raylet that started it
// and exits when the raylet closes its registration stream.
package main

import (
	"context"
	"encoding/hex"
	"fmt"
	"net"
	"os"

	"google.golang.org/grpc"

	"github.com/goray/goray/internal/errs"
	"github.com/goray/goray/internal/rpc"
	"github.com/goray/goray/internal/workerenv"
	pb "github.com/goray/goray/proto/goray/v1"
)

type workerService struct {
	pb.UnimplementedWorkerServiceServer
}

func (workerService) ConstructActor(_ context.Context, req *pb.ConstructActorRequest) (*pb.ConstructActorResponse, error) {
	switch name := req.GetSpec().GetTypeName(); name {
	case "crash":
		fmt.Println("crashing on purpose")
		os.Exit(3)
	case "missing":
		return nil, errs.Status(errs.New(errs.KindNotFound, name, "actor type is not registered"))
	}
	return &pb.ConstructActorResponse{}, nil
}

func (workerService) KillActor(context.Context, *pb.DestroyActorRequest) (*pb.DestroyActorResponse, error) {
	return &pb.DestroyActorResponse{}, nil
}

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "test worker:", err)
		os.Exit(1)
	}
}

func run() error {
	env, err := workerenv.Read()
	if err != nil {
		return err
	}
	id, err := hex.DecodeString(env.WorkerID)
	if err != nil {
		return err
	}
	lis, err := net.Listen("tcp", net.JoinHostPort(env.ListenHost, "0"))
	if err != nil {
		return err
	}
	srv := grpc.NewServer(rpc.ServerOptions(env.Token)...)
	pb.RegisterWorkerServiceServer(srv, workerService{})
	go srv.Serve(lis)
	defer srv.Stop()

	cc, err := rpc.Dial(env.RayletAddress, env.Token)
	if err != nil {
		return err
	}
	defer cc.Close()
	stream, err := rpc.NewNodeClient(cc).RegisterWorker(context.Background(), &pb.RegisterWorkerRequest{
		WorkerId: id, Address: lis.Addr().String(), Pid: int32(os.Getpid()),
	})
	if err != nil {
		return err
	}
	if _, err := stream.Recv(); err != nil {
		return err
	}
	fmt.Println("test worker registered")
	for {
		if _, err := stream.Recv(); err != nil {
			return nil
		}
	}
}
