package main

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"github.com/goray/goray/internal/core"
	"github.com/goray/goray/internal/errs"
	"github.com/goray/goray/internal/rpc"
	pb "github.com/goray/goray/proto/goray/v1"
	"google.golang.org/protobuf/encoding/protojson"
)

// DeployConfig configures `goray deploy`.
type DeployConfig struct {
	// Binary is the Go program to deploy (built with goray's runtime.Init).
	Binary string
	// Namespace the binary serves. Required.
	Namespace string
	// Address of the head; default GORAY_ADDRESS.
	Address string
	// Token; default GORAY_TOKEN, GORAY_TOKEN_FILE, the local token file.
	Token string
	// NoSetup skips running the binary as the deployment's driver (which
	// creates its named actors).
	NoSetup bool
	// SetupTimeout bounds that run. Default 2 minutes.
	SetupTimeout time.Duration
	// Stderr receives the setup run's output. Default os.Stderr.
	Stderr io.Writer
}

// Validate fills defaults and checks the config.
func (c *DeployConfig) Validate() error {
	if c.Binary == "" {
		return errors.New("deploy: name the binary to deploy: goray deploy ./bin --namespace NAME")
	}
	if c.Namespace == "" {
		return errors.New("deploy: --namespace is required: clients name it to call the binary's functions and actors")
	}
	if c.Address == "" {
		c.Address = os.Getenv("GORAY_ADDRESS")
	}
	if c.Address == "" {
		return errors.New("deploy: no cluster address: pass --address HOST:PORT or set GORAY_ADDRESS to the address `raylet --head` printed")
	}
	c.Token = rpc.ResolveToken(c.Token, c.Address)
	if c.SetupTimeout == 0 {
		c.SetupTimeout = 2 * time.Minute
	}
	if c.Stderr == nil {
		c.Stderr = os.Stderr
	}
	abs, err := filepath.Abs(c.Binary)
	if err != nil {
		return fmt.Errorf("deploy: %w", err)
	}
	c.Binary = abs
	st, err := os.Stat(abs)
	if err != nil {
		return fmt.Errorf("deploy: %w", err)
	}
	if !st.Mode().IsRegular() || st.Mode()&0o111 == 0 {
		return fmt.Errorf("deploy: %s is not an executable file (build it with `go build -o`)", abs)
	}
	return nil
}

func deployCommand(ctx context.Context, args []string, out io.Writer) error {
	var cfg DeployConfig
	fs := flag.NewFlagSet("deploy", flag.ContinueOnError)
	fs.StringVar(&cfg.Namespace, "namespace", "", "namespace the binary serves (required)")
	fs.StringVar(&cfg.Address, "address", "", "HOST:PORT of the head (default $GORAY_ADDRESS)")
	resolve := tokenFlags(fs, &cfg.Token, "file holding the cluster token (default: $GORAY_TOKEN, $GORAY_TOKEN_FILE, the local token file)")
	fs.BoolVar(&cfg.NoSetup, "no-setup", false, "do not run the binary as the deployment's driver (it creates the named actors)")
	fs.DurationVar(&cfg.SetupTimeout, "setup-timeout", 2*time.Minute, "bound on the setup run")
	// Flags may come before or after the binary.
	for len(args) > 0 {
		if err := fs.Parse(args); err != nil {
			return err
		}
		args = fs.Args()
		if len(args) == 0 {
			break
		}
		if cfg.Binary != "" {
			return fmt.Errorf("deploy: unexpected argument %q: deploy one binary at a time", args[0])
		}
		cfg.Binary, args = args[0], args[1:]
	}
	if err := resolve(); err != nil {
		return err
	}
	if err := cfg.Validate(); err != nil {
		return err
	}
	return Deploy(ctx, cfg, out)
}

// Deploy registers cfg.Binary as the namespace's detached job, uploads it if
// the head does not have it, and runs it once as the deployment's driver
// (GORAY_DEPLOY_JOB): the named actors it creates belong to the deployment
// and serve clients after it exits.
func Deploy(ctx context.Context, cfg DeployConfig, out io.Writer) error {
	reg, err := describe(ctx, cfg.Binary)
	if err != nil {
		return err
	}
	f, err := os.Open(cfg.Binary)
	if err != nil {
		return fmt.Errorf("deploy: %w", err)
	}
	defer f.Close()
	h := sha256.New()
	size, err := io.Copy(h, f)
	if err != nil {
		return fmt.Errorf("deploy: hash %s: %w", cfg.Binary, err)
	}
	sum := h.Sum(nil)

	cc, err := rpc.DialHead(cfg.Address, cfg.Token)
	if err != nil {
		return err
	}
	defer cc.Close()
	dctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	resp, err := pb.NewDeployServiceClient(cc).DeployJob(dctx, &pb.DeployJobRequest{
		Namespace: cfg.Namespace, BinarySha256: sum, BinarySize: uint64(size),
		Entrypoint: filepath.Base(cfg.Binary), Registry: reg,
	})
	if err != nil {
		return fmt.Errorf("deploy to the head at %s: %w", cfg.Address, errs.FromStatus(err))
	}
	if !resp.GetBinaryPresent() {
		if err := core.UploadJobBinary(ctx, rpc.NewHeadClient(cc), f, sum, size); err != nil {
			return fmt.Errorf("deploy: %w", err)
		}
	}
	job := hex.EncodeToString(resp.GetJobId())
	if !cfg.NoSetup {
		if err := setup(ctx, cfg, job, out); err != nil {
			return err
		}
	}
	fmt.Fprintf(out, "deployed %s to namespace %q as job %s: %d function(s), %d actor type(s)\n",
		filepath.Base(cfg.Binary), cfg.Namespace, job, len(reg.GetFunctions()), len(reg.GetActorTypes()))
	if r := resp.GetReplacedJobId(); len(r) > 0 {
		fmt.Fprintf(out, "replaced job %x (its workers and actors were stopped)\n", r)
	}
	return nil
}

// describe runs the binary with GORAY_DESCRIBE=1 and reads its registry.
func describe(ctx context.Context, bin string) (*pb.Registry, error) {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin)
	cmd.Env = append(cleanEnv(), core.EnvDescribe+"=1")
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return nil, fmt.Errorf("deploy: run %s with %s=1 to list what it registers: %v\n%s", bin, core.EnvDescribe, err, stderr.Bytes())
	}
	reg := &pb.Registry{}
	if err := (protojson.UnmarshalOptions{DiscardUnknown: true}).Unmarshal(stdout.Bytes(), reg); err != nil {
		return nil, fmt.Errorf("deploy: %s did not print its registry with %s=1 (does its main call goray's runtime.Init first?): %v", bin, core.EnvDescribe, err)
	}
	return reg, nil
}

// setup runs the binary as a driver attached to the deployment's job.
func setup(ctx context.Context, cfg DeployConfig, job string, out io.Writer) error {
	ctx, cancel := context.WithTimeout(ctx, cfg.SetupTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, cfg.Binary)
	cmd.Env = append(cleanEnv(),
		"GORAY_ADDRESS="+cfg.Address, "GORAY_TOKEN="+cfg.Token,
		core.EnvDeployJob+"="+job, core.EnvDeployNamespace+"="+cfg.Namespace)
	cmd.Stdout, cmd.Stderr = out, cfg.Stderr
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("deploy: the setup run of %s (as the deployment's driver) failed: %w; the binary is deployed, but the actors it should create may be missing", cfg.Binary, err)
	}
	return nil
}

// cleanEnv is this process's environment without goray's worker and deploy
// variables.
func cleanEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		switch k, _, _ := strings.Cut(kv, "="); k {
		case "GORAY_WORKER", core.EnvDescribe, core.EnvDeployJob, core.EnvDeployNamespace:
			continue
		}
		env = append(env, kv)
	}
	return env
}
