package bench

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"

	ifiles "github.com/goray/goray/internal/files"
	"github.com/goray/goray/internal/rpc"
	pb "github.com/goray/goray/proto/goray/v1"
)

// The file store's workloads put and get files of the transfer size
// through the driver's node (the head raylet of the embedded cluster), with
// 1 replica and with 3 (the embedded cluster gets a third raylet for
// those). Their baselines write (with fsync, as a put does) and read the
// same bytes to and from a plain file in the node's data directory, in
// this process; each file metric's ratio is to the slower of that and
// grpc_bulk_gigabytes (the goal of BENCHMARKS.md).
const (
	fileWriteGigabytes = "file_write_gigabytes"
	fileReadGigabytes  = "file_read_gigabytes"
	goalFilePut        = "≥ 0.7 × the slower of " + fileWriteGigabytes + " and " + grpcBulkGigabytes + " (1 replica)"
	goalFileGet        = "≥ 0.7 × the slower of " + fileReadGigabytes + " and " + grpcBulkGigabytes + " (1 replica)"
)

// nodeDataDir is the driver's node's data directory (where its file
// replicas live), and the cluster's address and token.
func (r *runner) nodeDataDir(ctx context.Context) (dir, addr, token string, err error) {
	st, err := r.localStore(ctx)
	if err != nil {
		return "", "", "", err
	}
	addr, token = r.cfg.Address, r.cfg.Token
	if addr == "" {
		addr, token = r.cluster.addr, r.cluster.token
	}
	// The spill directory is spill-* inside the data directory unless the
	// node was told otherwise.
	return filepath.Dir(st.GetSpillDir()), addr, rpc.ResolveToken(token, addr), nil
}

func fileBaselines(sz sizes) []*spec {
	size := sz.transfer
	per := float64(size) / gb
	return []*spec{
		{name: fileWriteGigabytes, unit: UnitGB, per: per,
			note: fmt.Sprintf("write %d MiB to a new file in the node's data directory in 1 MiB writes, fsync, close", size>>20),
			setup: func(ctx context.Context, r *runner) (op, func(), error) {
				dir, _, _, err := r.nodeDataDir(ctx)
				if err != nil {
					return nil, nil, err
				}
				buf := filled(size)
				path, cleanup := baselineFile(dir, "file-write")
				return func(_ context.Context, w *stopwatch) error {
					w.Pause()
					os.Remove(path)
					w.Resume()
					f, err := os.OpenFile(path, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o600)
					if err != nil {
						return err
					}
					for off := 0; off < size; off += 1 << 20 {
						if _, err := f.Write(buf[off:min(off+1<<20, size)]); err != nil {
							f.Close()
							return err
						}
					}
					if err := f.Sync(); err != nil {
						f.Close()
						return err
					}
					return f.Close()
				}, cleanup, nil
			}},
		{name: fileReadGigabytes, unit: UnitGB, per: per,
			note: fmt.Sprintf("read a %d MiB file in the node's data directory 1 MiB at a time into one buffer", size>>20),
			setup: func(ctx context.Context, r *runner) (op, func(), error) {
				dir, _, _, err := r.nodeDataDir(ctx)
				if err != nil {
					return nil, nil, err
				}
				path, cleanup := baselineFile(dir, "file-read")
				if err := os.WriteFile(path, filled(size), 0o600); err != nil {
					cleanup()
					return nil, nil, err
				}
				buf := make([]byte, 1<<20)
				return func(context.Context, *stopwatch) error {
					f, err := os.Open(path)
					if err != nil {
						return err
					}
					defer f.Close()
					n := 0
					for {
						m, err := f.Read(buf)
						n += m
						if err == io.EOF {
							break
						}
						if err != nil {
							return err
						}
					}
					if n != size {
						return fmt.Errorf("read %d of %d bytes", n, size)
					}
					return nil
				}, cleanup, nil
			}},
	}
}

// reportGone tells the head at headAddr that the raylet of a ready line
// stopped (NodeRegistryService.ReportUnreachable).
func reportGone(headAddr, token, readyLine string) {
	addr, err := field(readyLine, "address")
	if err != nil {
		return
	}
	node, err := field(readyLine, "node")
	if err != nil {
		return
	}
	id, err := hex.DecodeString(node)
	if err != nil {
		return
	}
	cc, err := rpc.Dial(headAddr, token)
	if err != nil {
		return
	}
	defer cc.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_, _ = rpc.NewHeadClient(cc).ReportUnreachable(ctx, &pb.ReportUnreachableRequest{NodeId: id, Address: addr})
}

// fileSetup connects a file client through the driver's node and, for
// more than 2 replicas on the embedded cluster (two raylets), starts the
// raylets it lacks.
func (r *runner) fileSetup(ctx context.Context, replicas int) (*ifiles.Client, func(), error) {
	_, addr, token, err := r.nodeDataDir(ctx)
	if err != nil {
		return nil, nil, err
	}
	var extra []*child
	var readyLines []string
	stop := func() {
		for i, c := range extra {
			c.stop()
			// Gone for good: tell the head now, so that the workloads after
			// this one see the node dead (its probe finds the raylet's port
			// closed) rather than wait for its heartbeats to run out.
			reportGone(addr, token, readyLines[i])
		}
	}
	if r.cfg.Address == "" {
		for i := len(r.cluster.raylets); i < replicas; i++ {
			c, line, err := startChild(ctx, r.cfg.Exe, nil, rayletReady, childRaylet, "-address", addr, "-token-file", filepath.Join(r.cluster.dir, "token"))
			if err != nil {
				stop()
				return nil, nil, fmt.Errorf("start a raylet for %d replicas: %w", replicas, err)
			}
			extra, readyLines = append(extra, c), append(readyLines, line)
		}
	}
	c, err := ifiles.DialVia(ctx, addr, token)
	if err != nil {
		stop()
		return nil, nil, err
	}
	return c, func() { c.Close(); stop() }, nil
}

func fileSpecs(sz sizes) []*spec {
	size := sz.transfer
	per := float64(size) / gb
	var out []*spec
	for _, replicas := range []int{1, 3} {
		suffix := ""
		goalPut, goalGet := goalFilePut, goalFileGet
		if replicas > 1 {
			suffix = fmt.Sprintf("_%d_replicas", replicas)
			goalPut, goalGet = "", ""
		}
		out = append(out,
			&spec{name: "file_put" + suffix + "_gigabytes", unit: UnitGB, per: per, baseline: fileWriteGigabytes,
				slowerOf: []string{fileWriteGigabytes, grpcBulkGigabytes}, goal: goalPut,
				note: fmt.Sprintf("put a %d MiB file (new content each time) with %d replica(s) through the driver's node, from this process; removed after each put", size>>20, replicas),
				setup: func(ctx context.Context, r *runner) (op, func(), error) {
					c, cleanup, err := r.fileSetup(ctx, replicas)
					if err != nil {
						return nil, nil, err
					}
					buf := filled(size)
					var i uint64
					return func(ctx context.Context, w *stopwatch) error {
						w.Pause()
						i++
						binary.LittleEndian.PutUint64(buf, i) // a new file each time
						w.Resume()
						info, err := c.Put(ctx, bytes.NewReader(buf), replicas, "")
						if err != nil {
							return err
						}
						if got := len(info.GetReplicas()); got != replicas {
							return fmt.Errorf("put stored %d replicas, want %d", got, replicas)
						}
						w.Pause()
						defer w.Resume()
						_, err = c.Remove(ctx, fmt.Sprintf("%x", info.GetSha256()))
						return err
					}, cleanup, nil
				}},
			&spec{name: "file_get" + suffix + "_gigabytes", unit: UnitGB, per: per, baseline: fileReadGigabytes,
				slowerOf: []string{fileReadGigabytes, grpcBulkGigabytes}, goal: goalGet,
				note: fmt.Sprintf("get (verified) a %d MiB file stored with %d replica(s), one of them on the driver's node, into this process", size>>20, replicas),
				setup: func(ctx context.Context, r *runner) (op, func(), error) {
					c, cleanup, err := r.fileSetup(ctx, replicas)
					if err != nil {
						return nil, nil, err
					}
					info, err := c.Put(ctx, bytes.NewReader(filled(size)), replicas, "")
					if err != nil {
						cleanup()
						return nil, nil, err
					}
					ref := fmt.Sprintf("%x", info.GetSha256())
					return func(ctx context.Context, _ *stopwatch) error {
							rd, err := c.Open(ctx, ref)
							if err != nil {
								return err
							}
							defer rd.Close()
							n, err := rd.WriteTo(io.Discard)
							if err != nil {
								return err
							}
							if n != int64(size) {
								return fmt.Errorf("got %d bytes, want %d", n, size)
							}
							return nil
						}, func() {
							c.Remove(context.Background(), ref)
							cleanup()
						}, nil
				}},
		)
	}
	return out
}
