package rpc

import (
	"google.golang.org/grpc"

	pb "github.com/goray/goray/proto/goray/v1"
)

// HeadClient calls the services the head serves, one per manager: the node
// table, jobs, actors, placement groups and the state API. Each service's
// methods are promoted, so head.RegisterJob and head.CreateActor both work
// on one value.
type HeadClient struct {
	pb.NodeRegistryServiceClient
	pb.JobServiceClient
	pb.ActorServiceClient
	pb.PlacementGroupServiceClient
	pb.StateServiceClient
	pb.CoordinationServiceClient
}

// NewHeadClient is a HeadClient over cc, a connection to the head.
func NewHeadClient(cc grpc.ClientConnInterface) *HeadClient {
	return &HeadClient{
		NodeRegistryServiceClient:   pb.NewNodeRegistryServiceClient(cc),
		JobServiceClient:            pb.NewJobServiceClient(cc),
		ActorServiceClient:          pb.NewActorServiceClient(cc),
		PlacementGroupServiceClient: pb.NewPlacementGroupServiceClient(cc),
		StateServiceClient:          pb.NewStateServiceClient(cc),
		CoordinationServiceClient:   pb.NewCoordinationServiceClient(cc),
	}
}

// NodeClient calls the services a raylet serves to its node's processes and
// the head, one per manager: the node and its worker pool, leases, bundles
// and local objects (object transfer between raylets is
// pb.ObjectTransferServiceClient).
type NodeClient struct {
	pb.NodeServiceClient
	pb.LeaseServiceClient
	pb.BundleServiceClient
	pb.LocalObjectServiceClient
}

// NewNodeClient is a NodeClient over cc, a connection to a raylet.
func NewNodeClient(cc grpc.ClientConnInterface) *NodeClient {
	return &NodeClient{
		NodeServiceClient:        pb.NewNodeServiceClient(cc),
		LeaseServiceClient:       pb.NewLeaseServiceClient(cc),
		BundleServiceClient:      pb.NewBundleServiceClient(cc),
		LocalObjectServiceClient: pb.NewLocalObjectServiceClient(cc),
	}
}
