package coord

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"sync"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/goray/goray/internal/core"
	"github.com/goray/goray/internal/errs"
	"github.com/goray/goray/internal/rpc"
	pb "github.com/goray/goray/proto/goray/v1"
)

// DefaultMaxRequestBytes is etcd's default bound on one request, used when
// the head does not say its own (an external cluster).
const DefaultMaxRequestBytes = 1536 * 1024

// Client is a connection to the cluster's coordination service (etcd) with
// the cluster's credentials. It is safe for concurrent use; Close it when
// done (that also revokes its process session, so its keys and locks go at
// once rather than after the session's TTL).
type Client struct {
	cli      *clientv3.Client
	info     Info
	readOnly bool

	// mu guards sess, the process session (Session).
	mu   sync.Mutex
	sess *Session
}

// Info is where a Client is connected.
type Info struct {
	// Endpoints are etcd's client URLs.
	Endpoints []string
	// User is the etcd user ("" when etcd's authentication is off).
	User string
	// MaxRequestBytes is etcd's bound on one request.
	MaxRequestBytes int64
	// MinLeaseTTL is the shortest session TTL etcd grants.
	MinLeaseTTL time.Duration
}

// Option configures Connect.
type Option interface{ apply(*connectOpts) }

type connectOpts struct {
	address, token string
	readOnly       bool
	endpoints      []string
	user, password string
	dialTimeout    time.Duration
}

type optionFunc func(*connectOpts)

func (f optionFunc) apply(o *connectOpts) { f(o) }

// WithAddress connects through the goray head (or any raylet of the
// cluster) at addr HOST:PORT. Default: the cluster this process's runtime is
// connected to (runtime.Init), else $GORAY_ADDRESS.
func WithAddress(addr string) Option { return optionFunc(func(o *connectOpts) { o.address = addr }) }

// WithToken is the cluster token for WithAddress. Default: $GORAY_TOKEN,
// then the file $GORAY_TOKEN_FILE names, then the token file the head wrote
// for that address on this machine.
func WithToken(token string) Option { return optionFunc(func(o *connectOpts) { o.token = token }) }

// WithReadOnly connects as the read-only etcd user: reads and watches work,
// every write fails with ErrPermissionDenied.
func WithReadOnly() Option { return optionFunc(func(o *connectOpts) { o.readOnly = true }) }

// WithEndpoints connects to etcd directly, at the given client URLs with
// the given user and password (empty: no authentication), bypassing the
// head. For tools and tests that already hold the credentials.
func WithEndpoints(endpoints []string, user, password string) Option {
	return optionFunc(func(o *connectOpts) { o.endpoints, o.user, o.password = endpoints, user, password })
}

// WithDialTimeout bounds connecting to etcd; default 10 s.
func WithDialTimeout(d time.Duration) Option {
	return optionFunc(func(o *connectOpts) { o.dialTimeout = d })
}

// Connect connects to the cluster's coordination service: it asks the head
// (over the cluster's authenticated gRPC) for etcd's endpoint and the
// credentials, then connects to etcd with them. With no option it uses the
// runtime's cluster (after runtime.Init, in drivers, workers and actors'
// processes alike), else $GORAY_ADDRESS.
func Connect(ctx context.Context, opts ...Option) (*Client, error) {
	var o connectOpts
	for _, op := range opts {
		op.apply(&o)
	}
	if o.dialTimeout <= 0 {
		o.dialTimeout = 10 * time.Second
	}
	in := Info{Endpoints: o.endpoints, User: o.user, MaxRequestBytes: DefaultMaxRequestBytes, MinLeaseTTL: time.Second}
	password := o.password
	if len(o.endpoints) == 0 {
		resp, err := discover(ctx, o)
		if err != nil {
			return nil, err
		}
		in.Endpoints, in.User, password = resp.GetEndpoints(), resp.GetUser(), resp.GetPassword()
		if n := resp.GetMaxRequestBytes(); n > 0 {
			in.MaxRequestBytes = n
		}
		if ms := resp.GetMinLeaseTtlMs(); ms > 0 {
			in.MinLeaseTTL = time.Duration(ms) * time.Millisecond
		}
	}
	cli, err := clientv3.New(clientv3.Config{
		Endpoints: in.Endpoints, Username: in.User, Password: password,
		DialTimeout: o.dialTimeout, Logger: zap.NewNop(), Context: context.Background(),
		MaxCallSendMsgSize: int(in.MaxRequestBytes) + 64*1024,
		// Keepalives find a dead connection (a restarted head's etcd) soon.
		DialKeepAliveTime: 10 * time.Second, DialKeepAliveTimeout: 5 * time.Second,
	})
	if err != nil {
		return nil, convert(err, "connect to etcd at "+strings.Join(in.Endpoints, ","))
	}
	return &Client{cli: cli, info: in, readOnly: o.readOnly}, nil
}

// discover asks the head for etcd's endpoint and credentials.
func discover(ctx context.Context, o connectOpts) (*pb.GetCoordinationResponse, error) {
	req := &pb.GetCoordinationRequest{ReadOnly: o.readOnly}
	if o.address == "" {
		if c, err := core.Current(); err == nil && c.Head() != nil {
			resp, err := c.Head().GetCoordination(ctx, req)
			if err != nil {
				return nil, headErr(err, "the cluster's head")
			}
			return resp, nil
		}
		o.address = os.Getenv("GORAY_ADDRESS")
	}
	if o.address == "" {
		return nil, errs.New(errs.KindInvalidArgument, "", "no cluster to connect to: call runtime.Init first, pass coord.WithAddress(HOST:PORT), or set GORAY_ADDRESS to the address `raylet --head` printed")
	}
	token := rpc.ResolveToken(o.token, o.address)
	cc, err := rpc.DialHead(o.address, token) // one head, or several: any answers
	if err != nil {
		return nil, err
	}
	defer cc.Close()
	resp, err := rpc.NewHeadClient(cc).GetCoordination(ctx, req)
	if status.Code(err) != codes.Unimplemented {
		if err != nil {
			return nil, headErr(err, o.address)
		}
		return resp, nil
	}
	// A raylet that is not the head: ask it where its head is.
	info, nerr := rpc.NewNodeClient(cc).GetNodeInfo(ctx, &pb.GetNodeInfoRequest{})
	if nerr != nil || info.GetHeadAddress() == "" {
		return nil, errs.New(errs.KindNotFound, "", "the server at %s is neither a goray head nor a raylet that knows its head; pass the head's HOST:PORT", o.address)
	}
	hc, err := rpc.DialHead(info.GetHeadAddress(), token)
	if err != nil {
		return nil, err
	}
	defer hc.Close()
	resp, err = rpc.NewHeadClient(hc).GetCoordination(ctx, req)
	if err != nil {
		return nil, headErr(err, info.GetHeadAddress())
	}
	return resp, nil
}

func headErr(err error, where string) error {
	err = errs.FromStatus(err)
	var e *errs.Error
	if errors.As(err, &e) && e.Kind == errs.KindUnauthenticated {
		return errs.New(errs.KindUnauthenticated, "", "the goray head at %s rejected this process's cluster token (%s): set GORAY_TOKEN or GORAY_TOKEN_FILE to the token `raylet --head` wrote", where, e.Message)
	}
	return fmt.Errorf("ask the goray head at %s for the coordination service: %w", where, err)
}

// Raw is the underlying etcd client, for anything the helpers lack. Its
// errors are etcd's own; Convert turns them into goray's.
func (c *Client) Raw() *clientv3.Client { return c.cli }

// Info says where c is connected.
func (c *Client) Info() Info { return c.info }

// Close revokes c's process session (if one was made) and closes the
// connection.
func (c *Client) Close() error {
	c.mu.Lock()
	s := c.sess
	c.sess = nil
	c.mu.Unlock()
	if s != nil {
		s.Close()
	}
	return c.cli.Close()
}

// Session is c's process session: one lease, made on first use, kept alive
// by this process for as long as it lives (WithTTL: DefaultSessionTTL), so
// keys put with it and locks and leadership held through it vanish when the
// process dies. Once lost (the lease expired: the process was stopped
// longer than the TTL, or etcd was unreachable as long), the next call makes
// a new one.
func (c *Client) Session(ctx context.Context) (*Session, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.sess != nil {
		select {
		case <-c.sess.Done():
			c.sess = nil
		default:
			return c.sess, nil
		}
	}
	s, err := c.NewSession(ctx)
	if err != nil {
		return nil, err
	}
	c.sess = s
	return s, nil
}

// checkSize refuses a request that cannot fit etcd's bound before it is
// sent, with the figures.
func (c *Client) checkSize(key string, value []byte) error {
	if key == "" {
		return errs.New(errs.KindInvalidArgument, "", "empty key: etcd keys are 1 byte or more")
	}
	// etcd counts the whole request; leave room for its framing.
	if n := int64(len(key) + len(value)); n > c.info.MaxRequestBytes-512 {
		return errs.New(errs.KindInvalidArgument, "", "key %q… and value are %d bytes, over etcd's request limit of %d bytes: store large data as a goray object or file and keep its ID here",
			truncate(key, 32), n, c.info.MaxRequestBytes)
	}
	return nil
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n]
}

// Credentials are etcd's endpoints and a user's credentials, as the head
// hands them out.
type Credentials struct {
	Endpoints      []string
	User, Password string
}

// GetCredentials asks the head for etcd's endpoints and the cluster's etcd
// credentials (the read-only user's WithReadOnly), for a program that
// connects with another etcd client. The options are Connect's.
func GetCredentials(ctx context.Context, opts ...Option) (Credentials, error) {
	var o connectOpts
	for _, op := range opts {
		op.apply(&o)
	}
	if len(o.endpoints) > 0 {
		return Credentials{Endpoints: o.endpoints, User: o.user, Password: o.password}, nil
	}
	resp, err := discover(ctx, o)
	if err != nil {
		return Credentials{}, err
	}
	return Credentials{Endpoints: resp.GetEndpoints(), User: resp.GetUser(), Password: resp.GetPassword()}, nil
}
