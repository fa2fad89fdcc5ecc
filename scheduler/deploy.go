package scheduler

import (
	"context"
	"sort"
	"sync"
	"time"

	"github.com/goray/goray/internal/ids"
	pb "github.com/goray/goray/proto/goray/v1"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/proto"
)

// maxRegistryEntries bounds the functions plus actor types a deployment
// lists, and maxNameLen the length of each registered name.
const (
	maxRegistryEntries = 10000
	maxNameLen         = 256
)

// Deployer implements goray.v1.DeployService on top of a Server: a job
// binary deployed under a namespace is an ordinary job that nothing keeps
// alive (no driver holds KeepJobAlive for it), so it is never finished by a
// driver going away. It runs until another binary is deployed to the same
// namespace, which finishes it. The client gateway submits the namespace's
// work as this job, so raylets start its workers from the deployed binary.
//
// Deployments are kept in memory: after a head restart they must be deployed
// again (the job table's persistence is the Store's business; deployments
// join it when the head's tables are persisted).
type Deployer struct {
	pb.UnimplementedDeployServiceServer
	s  *Server
	mu sync.Mutex
	m  map[string]*pb.Deployment // by namespace
}

var _ pb.DeployServiceServer = (*Deployer)(nil)

// NewDeployer makes the DeployService of s.
func NewDeployer(s *Server) *Deployer {
	return &Deployer{s: s, m: make(map[string]*pb.Deployment)}
}

// Register registers the DeployService on g.
func (d *Deployer) Register(g grpc.ServiceRegistrar) { pb.RegisterDeployServiceServer(g, d) }

// DeployJob registers the binary as the namespace's job (RegisterJob with no
// driver) and finishes the namespace's previous deployment, if any.
func (d *Deployer) DeployJob(ctx context.Context, req *pb.DeployJobRequest) (*pb.DeployJobResponse, error) {
	ns := req.GetNamespace()
	if ns == "" || len(ns) > maxNameLen {
		return nil, invalid("DeployJob: namespace must be 1 to %d bytes", maxNameLen)
	}
	if err := checkRegistry(req.GetRegistry()); err != nil {
		return nil, err
	}
	reg, err := d.s.RegisterJob(ctx, &pb.RegisterJobRequest{
		BinarySha256: req.GetBinarySha256(), BinarySize: req.GetBinarySize(),
		Namespace: ns, Entrypoint: req.GetEntrypoint(),
	})
	if err != nil {
		return nil, err
	}
	dep := &pb.Deployment{
		Namespace: ns, JobId: reg.GetJobId(), BinarySha256: req.GetBinarySha256(),
		Entrypoint: req.GetEntrypoint(), Registry: req.GetRegistry(),
		DeployedAtUnixMs: time.Now().UnixMilli(),
	}
	d.mu.Lock()
	prev := d.m[ns]
	d.m[ns] = dep
	d.mu.Unlock()
	resp := &pb.DeployJobResponse{JobId: reg.GetJobId(), BinaryPresent: reg.GetBinaryPresent()}
	if prev != nil {
		resp.ReplacedJobId = prev.GetJobId()
		if old, err := ids.ParseJobID(prev.GetJobId()); err == nil {
			if err := d.s.finishJob(old, "namespace "+ns+" was deployed again"); err != nil {
				d.s.log.Warn("finish replaced deployment", "namespace", ns, "job", old, "err", err)
			}
		}
	}
	d.s.log.Info("namespace deployed", "namespace", ns, "job", reg.GetJobId(), "entrypoint", req.GetEntrypoint(),
		"functions", len(req.GetRegistry().GetFunctions()), "actor_types", len(req.GetRegistry().GetActorTypes()))
	return resp, nil
}

// ListDeployments lists the deployments, sorted by namespace.
func (d *Deployer) ListDeployments(_ context.Context, req *pb.ListDeploymentsRequest) (*pb.ListDeploymentsResponse, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	out := &pb.ListDeploymentsResponse{}
	for ns, dep := range d.m {
		if req.GetNamespace() == "" || req.GetNamespace() == ns {
			out.Deployments = append(out.Deployments, proto.Clone(dep).(*pb.Deployment))
		}
	}
	sort.Slice(out.Deployments, func(i, j int) bool {
		return out.Deployments[i].GetNamespace() < out.Deployments[j].GetNamespace()
	})
	return out, nil
}

func checkRegistry(r *pb.Registry) error {
	if n := len(r.GetFunctions()) + len(r.GetActorTypes()); n > maxRegistryEntries {
		return invalid("DeployJob: registry lists %d entries, at most %d allowed", n, maxRegistryEntries)
	}
	for _, f := range r.GetFunctions() {
		if f.GetName() == "" || len(f.GetName()) > maxNameLen {
			return invalid("DeployJob: function name %.64q must be 1 to %d bytes", f.GetName(), maxNameLen)
		}
	}
	for _, a := range r.GetActorTypes() {
		if a.GetName() == "" || len(a.GetName()) > maxNameLen {
			return invalid("DeployJob: actor type name %.64q must be 1 to %d bytes", a.GetName(), maxNameLen)
		}
	}
	return nil
}
