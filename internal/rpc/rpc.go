// Package rpc holds what every goray gRPC server and client shares: the
// cluster token and its interceptors, message size bounds and keepalives.
package rpc

import (
	"context"
	"crypto/rand"
	"crypto/subtle"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/grpc/tap"
)

// MaxMessageSize bounds every gRPC message goray sends or accepts. Values above
// the inline limit travel through the object store in chunks, never whole.
const MaxMessageSize = 16 << 20

// handshakeTimeout bounds a new connection's handshake on a server.
const handshakeTimeout = 10 * time.Second

// tokenKey is the metadata key that carries the cluster token.
const tokenKey = "authorization"

const bearer = "Bearer "

// GenerateToken makes a fresh random cluster token.
func GenerateToken() (string, error) {
	b := make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		return "", fmt.Errorf("generate cluster token: %w", err)
	}
	return hex.EncodeToString(b), nil
}

// WriteTokenFile writes token to path with mode 0600, creating its directory
// with mode 0700.
func WriteTokenFile(path, token string) error {
	dir := filepath.Dir(path)
	if err := makeTokenDir(dir); err != nil {
		return fmt.Errorf("write cluster token: %w", err)
	}
	// A fresh name opened with O_EXCL: a file or symlink planted in the
	// directory is never written through.
	f, err := os.CreateTemp(dir, filepath.Base(path)+".tmp-*")
	if err != nil {
		return fmt.Errorf("write cluster token: %w", err)
	}
	tmp := f.Name()
	_, err = f.WriteString(token + "\n")
	if err == nil {
		err = f.Chmod(0o600)
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, path)
	}
	if err != nil {
		os.Remove(tmp)
		return fmt.Errorf("write cluster token: %w", err)
	}
	return nil
}

// makeTokenDir makes dir, where a token file goes, if need be. Inside the
// per-user runtime directory every directory on the way must be this
// user's own, not a symlink, and closed to others (mode 0700): one another
// user made first could be read, or have files planted in it.
func makeTokenDir(dir string) error {
	root := RuntimeDir()
	rel, err := filepath.Rel(root, dir)
	if err != nil || rel == ".." || strings.HasPrefix(rel, ".."+string(filepath.Separator)) {
		return os.MkdirAll(dir, 0o700) // a directory the user chose
	}
	if err := os.MkdirAll(filepath.Dir(root), 0o755); err != nil {
		return err
	}
	at := root
	for _, part := range append([]string{""}, strings.Split(rel, string(filepath.Separator))...) {
		if part != "" && part != "." {
			at = filepath.Join(at, part)
		}
		if err := os.Mkdir(at, 0o700); err != nil && !errors.Is(err, os.ErrExist) {
			return err
		}
		if err := CheckPrivateDir(at); err != nil {
			return err
		}
	}
	return nil
}

// MakeRuntimeDir makes the per-user runtime directory if need be and
// checks that it is this user's own and closed to others; it returns it.
func MakeRuntimeDir() (string, error) {
	root := RuntimeDir()
	return root, makeTokenDir(root)
}

// CheckPrivateDir checks that dir is a directory (not a symlink) owned by
// this process's user with no access for others.
func CheckPrivateDir(dir string) error {
	st, err := os.Lstat(dir)
	if err != nil {
		return err
	}
	if st.Mode()&os.ModeSymlink != 0 || !st.IsDir() {
		return fmt.Errorf("%s is not a directory of its own (a symlink or a file): another user may have made it; remove it, or set GORAY_TOKEN_FILE to a path in a directory of yours", dir)
	}
	if sys, ok := st.Sys().(*syscall.Stat_t); ok && int(sys.Uid) != os.Getuid() {
		return fmt.Errorf("%s is owned by uid %d, not by this user (uid %d): another user may read or plant files there; remove it, or set GORAY_TOKEN_FILE to a path in a directory of yours", dir, sys.Uid, os.Getuid())
	}
	if perm := st.Mode().Perm(); perm&0o077 != 0 {
		return fmt.Errorf("%s has mode %04o: other users can reach into it; chmod 700 %s, or remove it", dir, perm, dir)
	}
	return nil
}

// ReadTokenFile reads a token written by WriteTokenFile.
func ReadTokenFile(path string) (string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return "", fmt.Errorf("read cluster token: %w", err)
	}
	tok := strings.TrimSpace(string(b))
	if tok == "" {
		return "", fmt.Errorf("read cluster token: %s is empty", path)
	}
	return tok, nil
}

// DefaultTokenPath is where `raylet --head` listening on addr writes its token
// unless told otherwise, and where drivers on the same machine look for it.
func DefaultTokenPath(addr string) string {
	if list := SplitAddresses(addr); len(list) > 1 {
		addr = list[0] // several heads share one token: the first's file
	}
	name := strings.NewReplacer(":", "_", "[", "", "]", "", "/", "_").Replace(addr)
	return filepath.Join(RuntimeDir(), "tokens", name+".token")
}

// RuntimeDir is the per-user directory for goray's local files.
func RuntimeDir() string {
	return filepath.Join(os.TempDir(), fmt.Sprintf("goray-%d", os.Getuid()))
}

// ResolveToken finds the token a client of the cluster at addr presents: opt
// if set, else GORAY_TOKEN, else the file GORAY_TOKEN_FILE names, else the
// file `raylet --head` wrote for addr on this machine; "" when none is found.
func ResolveToken(opt, addr string) string {
	if opt != "" {
		return opt
	}
	if t := os.Getenv("GORAY_TOKEN"); t != "" {
		return t
	}
	if f := os.Getenv("GORAY_TOKEN_FILE"); f != "" {
		if t, err := ReadTokenFile(f); err == nil {
			return t
		}
	}
	if t, err := ReadTokenFile(DefaultTokenPath(addr)); err == nil {
		return t
	}
	return ""
}

// ServerOptions are the options of every goray gRPC server. A handler's
// *errs.Error goes out as a status with details. With a non-empty token every
// RPC must carry it, or it fails with UNAUTHENTICATED.
func ServerOptions(token string) []grpc.ServerOption {
	opts := []grpc.ServerOption{
		grpc.MaxRecvMsgSize(MaxMessageSize),
		grpc.MaxSendMsgSize(MaxMessageSize),
		grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{MinTime: time.Second, PermitWithoutStream: true}),
		grpc.KeepaliveParams(keepalive.ServerParameters{Time: 10 * time.Second, Timeout: 5 * time.Second}),
		// A connection that has not finished its HTTP/2 handshake by then is
		// closed (gRPC's default holds a half-open one for 120 s).
		grpc.ConnectionTimeout(handshakeTimeout),
		// Outermost, so it sees every handler's error (errors.go).
		grpc.ChainUnaryInterceptor(unaryServerErrors),
		grpc.ChainStreamInterceptor(streamServerErrors),
	}
	if token != "" {
		opts = append(opts,
			// Before a stream's request is read: a caller without the token
			// costs no more than its headers.
			grpc.InTapHandle(func(ctx context.Context, info *tap.Info) (context.Context, error) {
				return ctx, checkTokenMD(info.Header, token)
			}),
			// And again in the handlers' chain, where the token is known to
			// have been seen whatever the transport.
			grpc.ChainUnaryInterceptor(func(ctx context.Context, req any, _ *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
				if err := checkToken(ctx, token); err != nil {
					return nil, err
				}
				return h(ctx, req)
			}),
			grpc.ChainStreamInterceptor(func(srv any, ss grpc.ServerStream, _ *grpc.StreamServerInfo, h grpc.StreamHandler) error {
				if err := checkToken(ss.Context(), token); err != nil {
					return err
				}
				return h(srv, ss)
			}),
		)
	}
	return opts
}

func checkToken(ctx context.Context, token string) error {
	md, _ := metadata.FromIncomingContext(ctx)
	return checkTokenMD(md, token)
}

func checkTokenMD(md metadata.MD, token string) error {
	vals := md.Get(tokenKey)
	if len(vals) == 0 {
		return status.Error(codes.Unauthenticated, "missing cluster token: set GORAY_TOKEN or GORAY_TOKEN_FILE to the token the head wrote")
	}
	got := strings.TrimPrefix(vals[0], bearer)
	if subtle.ConstantTimeCompare([]byte(got), []byte(token)) != 1 {
		return status.Error(codes.Unauthenticated, "wrong cluster token: use the token file written by `raylet --head`")
	}
	return nil
}

type tokenCreds string

func (t tokenCreds) GetRequestMetadata(context.Context, ...string) (map[string]string, error) {
	return map[string]string{tokenKey: bearer + string(t)}, nil
}

func (tokenCreds) RequireTransportSecurity() bool { return false }

// DialOptions are the options of every goray gRPC client: a status that
// carries a goray error comes back as that *errs.Error, and a non-empty
// token is sent with every RPC.
func DialOptions(token string) []grpc.DialOption {
	opts := []grpc.DialOption{
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(MaxMessageSize), grpc.MaxCallSendMsgSize(MaxMessageSize)),
		grpc.WithKeepaliveParams(keepalive.ClientParameters{Time: 10 * time.Second, Timeout: 5 * time.Second, PermitWithoutStream: true}),
		// Peers come back (a restarted head, at the same address): retry a
		// lost connection at most every 2s rather than grpc's 120s, so that
		// raylets and drivers reconnect well within the head's timeouts.
		grpc.WithConnectParams(grpc.ConnectParams{Backoff: backoff.Config{
			BaseDelay: 250 * time.Millisecond, Multiplier: 1.6, Jitter: 0.2, MaxDelay: 2 * time.Second,
		}, MinConnectTimeout: 5 * time.Second}),
		grpc.WithChainUnaryInterceptor(unaryClientErrors),
		grpc.WithChainStreamInterceptor(streamClientErrors),
	}
	if token != "" {
		opts = append(opts, grpc.WithPerRPCCredentials(tokenCreds(token)))
	}
	return opts
}

// LivenessInterval is how often a worker pings its raylet over its
// registration stream; with no answer for LivenessInterval more, the worker
// exits. A stopped or partitioned raylet thus loses its workers in about 4 s,
// well before the head's node timeout declares its actors dead and restarts
// them elsewhere: an actor never runs in two incarnations for long.
const LivenessInterval = 2 * time.Second

// DialLiveness is Dial for a worker's link to its raylet: keepalive pings
// every LivenessInterval, even without calls.
func DialLiveness(addr, token string) (*grpc.ClientConn, error) {
	opts := append(DialOptions(token), grpc.WithKeepaliveParams(keepalive.ClientParameters{
		Time: LivenessInterval, Timeout: LivenessInterval, PermitWithoutStream: true}))
	cc, err := grpc.NewClient("passthrough:///"+addr, opts...)
	if err != nil {
		return nil, fmt.Errorf("dial %s: %w", addr, err)
	}
	return cc, nil
}

// Dial opens a client connection to addr. It does not wait for the peer.
func Dial(addr, token string) (*grpc.ClientConn, error) {
	return DialWith(addr, token)
}

// DialWith is Dial with more options (after goray's own).
func DialWith(addr, token string, opts ...grpc.DialOption) (*grpc.ClientConn, error) {
	cc, err := grpc.NewClient("passthrough:///"+addr, append(DialOptions(token), opts...)...)
	if err != nil {
		return nil, fmt.Errorf("dial %s: %w", addr, err)
	}
	return cc, nil
}

// IsLoopback reports whether the host of a listen address is a loopback one.
func IsLoopback(addr string) bool {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		host = addr
	}
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// CheckListen refuses a non-loopback listen address when auth is off.
func CheckListen(addr string, authEnabled bool) error {
	if !authEnabled && !IsLoopback(addr) {
		return errors.New("refusing to listen on non-loopback address " + addr + " without auth: drop --no-auth, or listen on 127.0.0.1")
	}
	return nil
}

// StopServer stops srv gracefully, letting running calls finish, and stops
// it hard when they have not within timeout (a stream a peer holds open).
func StopServer(srv *grpc.Server, timeout time.Duration) {
	done := make(chan struct{})
	go func() { srv.GracefulStop(); close(done) }()
	t := time.NewTimer(timeout)
	defer t.Stop()
	select {
	case <-done:
	case <-t.C:
		srv.Stop()
		<-done
	}
}

// AdvertiseAddr is the address other processes reach a listener on: the
// listen address, or for an unspecified host (0.0.0.0, ::) the first
// non-loopback interface address.
func AdvertiseAddr(a *net.TCPAddr) string {
	if !a.IP.IsUnspecified() {
		return a.String()
	}
	host := "127.0.0.1"
	if addrs, err := net.InterfaceAddrs(); err == nil {
		for _, ad := range addrs {
			if ipn, ok := ad.(*net.IPNet); ok && !ipn.IP.IsLoopback() && ipn.IP.To4() != nil {
				host = ipn.IP.String()
				break
			}
		}
	}
	return net.JoinHostPort(host, fmt.Sprint(a.Port))
}
