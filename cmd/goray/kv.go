package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"time"

	"github.com/goray/goray/coord"
	"github.com/goray/goray/internal/rpc"
)

const kvUsage = `usage: goray kv <command> [flags] (etcdctl's feel, on the cluster's etcd)

commands:
  get KEY [--prefix] [--rev N] [--print-value-only] [--json]
                               read a key (or every key under a prefix)
  put KEY VALUE [--ttl D]      write a key; with --ttl, under a session that
                               ends when this command does
  del KEY [--prefix]           delete a key (or every key under a prefix)
  watch KEY [--prefix] [--rev N]
                               print every change, from revision N if given
  lock NAME [--ttl D] [--timeout D] [COMMAND ARGS...]
                               take the lock; print its key and fencing token,
                               then run COMMAND (GORAY_LOCK_TOKEN set) or hold
                               the lock until interrupted
  elect NAME [PROPOSAL] [--ttl D]
                               campaign with PROPOSAL and hold the leadership
                               until interrupted; without PROPOSAL, print each
                               leader as it changes
  creds [--read-only] [--json] print etcd's endpoint and the cluster's etcd
                               credentials (etcdctl's environment variables)

flags of every command:
  --address HOST:PORT   the head or any raylet (default $GORAY_ADDRESS)
  --token-file F        file holding the cluster token (default $GORAY_TOKEN, $GORAY_TOKEN_FILE, the local token file)
  --read-only           connect as the read-only etcd user
`

// kvConfig holds the flags of goray kv.
type kvConfig struct {
	address, token string
	readOnly       bool
	prefix         bool
	rev            int64
	valueOnly      bool
	jsonOut        bool
	ttl, timeout   time.Duration
}

// parseInterspersed parses fs over args, letting flags come after
// positional arguments (as etcdctl does) until stopAt positionals were
// seen (0: no limit; the rest is passed through unparsed, for lock's
// COMMAND).
func parseInterspersed(fs *flag.FlagSet, args []string, stopAt int) ([]string, error) {
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			return nil, err
		}
		args = fs.Args()
		if len(args) == 0 {
			return pos, nil
		}
		pos = append(pos, args[0])
		args = args[1:]
		if stopAt > 0 && len(pos) == stopAt {
			return append(pos, args...), nil
		}
	}
}

func kvCommand(ctx context.Context, args []string, out io.Writer) error {
	if len(args) == 0 || args[0] == "help" || args[0] == "-h" || args[0] == "--help" {
		fmt.Fprint(out, kvUsage)
		if len(args) == 0 {
			return errors.New("kv: no command given")
		}
		return nil
	}
	verb := args[0]
	var cfg kvConfig
	fs := flag.NewFlagSet("kv "+verb, flag.ContinueOnError)
	fs.StringVar(&cfg.address, "address", "", "HOST:PORT of the head or of any raylet (default $GORAY_ADDRESS)")
	resolve := tokenFlags(fs, &cfg.token, "file holding the cluster token (default: $GORAY_TOKEN, $GORAY_TOKEN_FILE, the local token file)")
	fs.BoolVar(&cfg.readOnly, "read-only", false, "connect as the read-only etcd user")
	fs.BoolVar(&cfg.prefix, "prefix", false, "every key under KEY")
	fs.Int64Var(&cfg.rev, "rev", 0, "revision to read at, or to watch from")
	fs.BoolVar(&cfg.valueOnly, "print-value-only", false, "print only the values")
	fs.BoolVar(&cfg.jsonOut, "json", false, "print JSON")
	fs.DurationVar(&cfg.ttl, "ttl", 0, "session TTL (lock, elect, put; default 5s for lock and elect)")
	fs.DurationVar(&cfg.timeout, "timeout", 0, "lock: how long to wait for the lock (default: forever)")
	stop := 0
	if verb == "lock" {
		stop = 1
	}
	pos, err := parseInterspersed(fs, args[1:], stop)
	if err != nil {
		return err
	}
	if err := resolve(); err != nil {
		return err
	}
	need := func(n int, what string) error {
		if len(pos) < n {
			return fmt.Errorf("kv %s: missing %s; see goray kv help", verb, what)
		}
		return nil
	}
	if verb == "creds" {
		return kvCreds(ctx, cfg, out)
	}
	opts := []coord.Option{}
	if cfg.address != "" {
		opts = append(opts, coord.WithAddress(cfg.address))
	} else if os.Getenv("GORAY_ADDRESS") == "" {
		return errors.New("no cluster address: pass --address HOST:PORT (the head's or a raylet's) or set GORAY_ADDRESS to the address `raylet --head` printed")
	}
	if cfg.token != "" {
		opts = append(opts, coord.WithToken(cfg.token))
	}
	if cfg.readOnly {
		opts = append(opts, coord.WithReadOnly())
	}
	cctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	c, err := coord.Connect(cctx, opts...)
	cancel()
	if err != nil {
		return err
	}
	defer c.Close()
	switch verb {
	case "get":
		if err := need(1, "KEY"); err != nil {
			return err
		}
		return kvGet(ctx, c, cfg, pos[0], out)
	case "put":
		if err := need(2, "KEY VALUE"); err != nil {
			return err
		}
		var popts []coord.PutOption
		if cfg.ttl > 0 {
			s, err := c.NewSession(ctx, coord.WithTTL(cfg.ttl))
			if err != nil {
				return err
			}
			// The key lives as long as the lease; this command does not
			// keep it alive: it ends after the TTL.
			s.Raw().Orphan()
			popts = append(popts, coord.WithSession(s))
		}
		if _, err := c.Put(ctx, pos[0], []byte(pos[1]), popts...); err != nil {
			return err
		}
		fmt.Fprintln(out, "OK")
		return nil
	case "del":
		if err := need(1, "KEY"); err != nil {
			return err
		}
		var n int64
		if cfg.prefix {
			n, _, err = c.DeletePrefix(ctx, pos[0])
		} else {
			var ok bool
			ok, _, err = c.Delete(ctx, pos[0])
			if ok {
				n = 1
			}
		}
		if err != nil {
			return err
		}
		fmt.Fprintln(out, n)
		return nil
	case "watch":
		if err := need(1, "KEY"); err != nil {
			return err
		}
		var wopts []coord.WatchOption
		if cfg.prefix {
			wopts = append(wopts, coord.WithPrefix())
		}
		if cfg.rev > 0 {
			wopts = append(wopts, coord.FromRevision(cfg.rev))
		}
		w := c.Watch(ctx, pos[0], wopts...)
		for ev := range w.C {
			fmt.Fprintf(out, "%s\n%s\n", ev.Type, ev.KV.Key)
			if ev.Type == coord.EventPut {
				fmt.Fprintf(out, "%s\n", ev.KV.Value)
			}
			if f, ok := out.(interface{ Sync() error }); ok {
				f.Sync()
			}
		}
		if ctx.Err() != nil {
			return nil
		}
		return w.Err()
	case "lock":
		if err := need(1, "NAME"); err != nil {
			return err
		}
		return kvLock(ctx, c, cfg, pos[0], pos[1:], out)
	case "elect":
		if err := need(1, "NAME"); err != nil {
			return err
		}
		return kvElect(ctx, c, cfg, pos, out)
	default:
		fmt.Fprint(os.Stderr, kvUsage)
		return fmt.Errorf("kv: unknown command %q", verb)
	}
}

func kvGet(ctx context.Context, c *coord.Client, cfg kvConfig, key string, out io.Writer) error {
	var kvs []coord.KV
	if cfg.prefix {
		var err error
		if kvs, _, err = c.RangeAt(ctx, key, 0, cfg.rev); err != nil {
			return err
		}
	} else {
		var kv coord.KV
		var err error
		if cfg.rev > 0 {
			kv, err = c.GetAt(ctx, key, cfg.rev)
		} else {
			kv, err = c.Get(ctx, key)
		}
		if err != nil {
			return err
		}
		kvs = []coord.KV{kv}
	}
	if cfg.jsonOut {
		type jkv struct {
			Key            string `json:"key"`
			Value          string `json:"value"`
			CreateRevision int64  `json:"create_revision"`
			ModRevision    int64  `json:"mod_revision"`
			Version        int64  `json:"version"`
			Lease          int64  `json:"lease,omitempty"`
		}
		js := make([]jkv, len(kvs))
		for i, kv := range kvs {
			js[i] = jkv{kv.Key, string(kv.Value), kv.CreateRevision, kv.ModRevision, kv.Version, kv.Lease}
		}
		return json.NewEncoder(out).Encode(js)
	}
	for _, kv := range kvs {
		if !cfg.valueOnly {
			fmt.Fprintln(out, kv.Key)
		}
		fmt.Fprintf(out, "%s\n", kv.Value)
	}
	return nil
}

func kvLock(ctx context.Context, c *coord.Client, cfg kvConfig, name string, command []string, out io.Writer) error {
	s, err := c.NewSession(ctx, coord.WithTTL(orDefault(cfg.ttl, coord.DefaultSessionTTL)))
	if err != nil {
		return err
	}
	defer s.Close()
	var lopts []coord.LockOption
	if cfg.timeout > 0 {
		lopts = append(lopts, coord.WithAcquireTimeout(cfg.timeout))
	}
	l, err := s.Lock(ctx, name, lopts...)
	if err != nil {
		return err
	}
	fmt.Fprintf(out, "%s\ntoken %d\n", l.Key(), l.Token())
	if len(command) == 0 {
		select {
		case <-ctx.Done():
		case <-l.Lost():
			return s.Close()
		}
		return l.Unlock(context.Background())
	}
	cmd := exec.CommandContext(ctx, command[0], command[1:]...)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = os.Stdin, out, os.Stderr
	cmd.Env = append(os.Environ(), "GORAY_LOCK_KEY="+l.Key(), "GORAY_LOCK_TOKEN="+strconv.FormatInt(l.Token(), 10))
	runErr := cmd.Run()
	if err := l.Unlock(context.Background()); err != nil && runErr == nil {
		return err
	}
	if runErr != nil {
		return fmt.Errorf("kv lock %s: %s: %w", name, command[0], runErr)
	}
	return nil
}

func kvElect(ctx context.Context, c *coord.Client, cfg kvConfig, pos []string, out io.Writer) error {
	s, err := c.NewSession(ctx, coord.WithTTL(orDefault(cfg.ttl, coord.DefaultSessionTTL)))
	if err != nil {
		return err
	}
	defer s.Close()
	e := s.Election(pos[0])
	if len(pos) < 2 { // observe
		for l := range e.Observe(ctx) {
			fmt.Fprintf(out, "%s\n%s\n", l.Key, l.Value)
		}
		return nil
	}
	l, err := e.Campaign(ctx, []byte(pos[1]))
	if err != nil {
		if ctx.Err() != nil {
			return nil
		}
		return err
	}
	fmt.Fprintf(out, "%s\n%s\n", l.Key, l.Value)
	select {
	case <-ctx.Done():
	case <-s.Done():
		return errors.New("kv elect: the session ended: the leadership is lost")
	}
	return e.Resign(context.Background())
}

func kvCreds(ctx context.Context, cfg kvConfig, out io.Writer) error {
	addr := cfg.address
	if addr == "" {
		addr = os.Getenv("GORAY_ADDRESS")
	}
	if addr == "" {
		return errors.New("no cluster address: pass --address HOST:PORT (the head's or a raylet's) or set GORAY_ADDRESS")
	}
	cctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	opts := []coord.Option{coord.WithAddress(addr), coord.WithToken(rpc.ResolveToken(cfg.token, addr))}
	if cfg.readOnly {
		opts = append(opts, coord.WithReadOnly())
	}
	cr, err := coord.GetCredentials(cctx, opts...)
	if err != nil {
		return err
	}
	if cfg.jsonOut {
		return json.NewEncoder(out).Encode(map[string]any{"endpoints": cr.Endpoints, "user": cr.User, "password": cr.Password})
	}
	fmt.Fprintf(out, "ETCDCTL_ENDPOINTS=%s\n", strings.Join(cr.Endpoints, ","))
	if cr.User != "" {
		fmt.Fprintf(out, "ETCDCTL_USER=%s:%s\n", cr.User, cr.Password)
	}
	return nil
}

func orDefault(d, def time.Duration) time.Duration {
	if d > 0 {
		return d
	}
	return def
}
