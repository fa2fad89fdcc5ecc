package embed

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"google.golang.org/grpc"

	"github.com/goray/goray/internal/coordsrv"
	"github.com/goray/goray/internal/gateway"
	"github.com/goray/goray/internal/leader"
	"github.com/goray/goray/internal/raylet"
	pb "github.com/goray/goray/proto/goray/v1"
	"github.com/goray/goray/scheduler"
)

// leaderWait bounds how long a head of several waits at start for the
// cluster to have a leader (its etcd cluster needs a quorum of members).
const leaderWait = 60 * time.Second

// haHead is the election side of a head of several: the elector's
// goroutine runs one scheduler.Server per term won, and the switch serves
// it (or refuses, while a standby).
type haHead struct {
	elector *leader.Elector
	sw      *headSwitch
	cancel  context.CancelFunc
	done    chan struct{}
	once    sync.Once
}

// stop ends the current term, if any, and the campaign, and waits.
func (h *haHead) stop() {
	h.once.Do(func() {
		if h.cancel == nil {
			return // the campaign never started (startHA failed before it)
		}
		h.cancel()
		<-h.done
	})
}

// headServices are the services a term's scheduler.Server and Deployer
// register: the switch serves them on behalf of the term.
var headServices = []*grpc.ServiceDesc{
	&pb.NodeRegistryService_ServiceDesc,
	&pb.JobService_ServiceDesc,
	&pb.ActorService_ServiceDesc,
	&pb.PlacementGroupService_ServiceDesc,
	&pb.StateService_ServiceDesc,
	&pb.FileIndexService_ServiceDesc,
	&pb.DeployService_ServiceDesc,
}

// startHA starts a head of several: its etcd member (joining the others),
// the gRPC server with the switch in front of the head's services, the
// gateway and node, and the campaign. It returns once the cluster has a
// leader (this head or another) and this head's node joined it.
func (s *Server) startHA(ctx context.Context) error {
	cfg := s.cfg
	if s.token == "" {
		return errors.New("raylet: a head of several needs the cluster token")
	}
	var err error
	if s.coord, err = coordsrv.New(coordsrv.Config{
		Dir: s.headDir, ClientListen: cfg.EtcdListen, PeerListen: cfg.EtcdPeerListen,
		Name: cfg.EtcdName, InitialCluster: cfg.EtcdInitialCluster,
		Token: s.token, Logger: cfg.Logger,
	}); err != nil {
		return fmt.Errorf("raylet: %w", err)
	}
	s.log.Info("starting this head's etcd member; it is ready once a majority of the heads' members run", "member", cfg.EtcdName, "cluster", cfg.EtcdInitialCluster)
	if err := s.coord.Start(ctx); err != nil {
		return fmt.Errorf("raylet: start the head's etcd member: %w", err)
	}
	if err := s.writeCredFiles(); err != nil {
		return err
	}
	el, err := leader.New(leader.Config{Client: s.coord.Admin(), Address: s.addr, TTL: cfg.HeadLeaseTTL, Logger: cfg.Logger})
	if err != nil {
		return fmt.Errorf("raylet: %w", err)
	}
	h := &haHead{elector: el, sw: &headSwitch{leader: el.Leader}, done: make(chan struct{})}
	s.ha = h
	s.srv = grpc.NewServer(raylet.ServerOptions(s.token)...)
	for _, d := range headServices {
		h.sw.register(s.srv, d)
	}
	s.coord.Register(s.srv)
	if s.gateway, err = gateway.New(gateway.Config{HeadAddress: s.addr, Token: s.token, Logger: cfg.Logger, Version: gateway.ServerVersion}); err != nil {
		return fmt.Errorf("raylet: start the client gateway: %w", err)
	}
	s.gateway.Register(s.srv)
	if !cfg.NoNode {
		nc := cfg.Config
		nc.Address, nc.HeadNode, nc.Token, nc.TokenFile = s.addr, true, s.token, ""
		if s.node, err = raylet.New(nc, s.lis.Addr()); err != nil {
			return err
		}
		s.headNode = newHeadNode(s.srv, s.lis.Addr(), nc)
		s.headNode.set(s.node)
	}
	s.serveDone = make(chan struct{})
	go func() {
		defer close(s.serveDone)
		if err := s.srv.Serve(s.lis); err != nil && !errors.Is(err, grpc.ErrServerStopped) {
			s.log.Error("gRPC server stopped", "err", err)
		}
	}()
	runCtx, cancel := context.WithCancel(context.Background())
	h.cancel = cancel
	go func() {
		defer close(h.done)
		el.Run(runCtx, s.lead)
	}()
	// Wait for a leader, then join this head's node to it.
	wctx, wcancel := context.WithTimeout(ctx, leaderWait)
	defer wcancel()
	for {
		if addr, _ := el.Leader(); addr != "" {
			break
		}
		select {
		case <-wctx.Done():
			return fmt.Errorf("raylet: no head of the cluster %s was elected within %s: are a majority of the heads running?", cfg.EtcdInitialCluster, leaderWait)
		case <-time.After(50 * time.Millisecond):
		}
	}
	if s.node == nil {
		s.log.Info("head ready (no node)", "address", s.addr, "data_dir", s.headDir)
		return nil
	}
	if err := s.node.Join(ctx); err != nil {
		return err
	}
	s.headNode.start(s.log)
	return nil
}

// lead runs one term: the head's tables from etcd, a scheduler.Server on
// them, served through the switch until the term ends.
func (s *Server) lead(ctx context.Context, t *leader.Term) {
	st, closeStore, fenced, err := s.termStore(ctx, t)
	if err != nil {
		s.log.Error("this head won the election but could not load the head's tables; resigning", "err", err)
		return
	}
	defer closeStore()
	sched, err := scheduler.New(scheduler.Config{
		DataDir:                s.headDir,
		Token:                  s.token,
		HeartbeatInterval:      s.cfg.HeartbeatInterval,
		NodeTimeout:            s.cfg.NodeTimeout,
		DriverReconnectTimeout: s.cfg.DriverReconnectTimeout,
		Logger:                 s.cfg.Logger.With("epoch", t.Epoch),
		Store:                  st,
		Binaries:               &scheduler.EtcdBinaries{Client: s.coord.Admin()},
		Epoch:                  t.Epoch,
		Leads:                  t.Valid,
	})
	if err != nil {
		s.log.Error("this head won the election but could not start the head; resigning", "err", err)
		return
	}
	reg := termRegistrar{}
	sched.Register(reg)
	scheduler.NewDeployer(sched).Register(reg)
	impls := map[string]any(reg)
	s.ha.sw.epoch.Store(t.Epoch)
	s.ha.sw.impls.Store(&impls)
	s.log.Info("head active", "address", s.addr, "epoch", t.Epoch)
	select {
	case <-ctx.Done():
	case <-fenced:
		s.log.Warn("a write of this head was refused by its fence: another head leads; stepping down", "epoch", t.Epoch)
	}
	s.ha.sw.impls.Store(nil)
	sched.Close()
}

// termStore opens the head's tables for term t: in etcd, every write
// fenced by the term.
func (s *Server) termStore(ctx context.Context, t *leader.Term) (scheduler.Store, func(), <-chan struct{}, error) {
	st, err := scheduler.OpenEtcdStore(ctx, scheduler.EtcdStoreConfig{Client: s.coord.Admin(), Fence: &t.Fence, Logger: s.cfg.Logger})
	if err != nil {
		return nil, nil, nil, err
	}
	return st, func() { st.Close() }, st.Fenced(), nil
}
