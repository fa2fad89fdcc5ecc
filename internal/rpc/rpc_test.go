package rpc

import (
	"context"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protowire"
)

func TestTokenFile(t *testing.T) {
	tok, err := GenerateToken()
	if err != nil {
		t.Fatal(err)
	}
	if len(tok) != 64 {
		t.Fatalf("token length: got %d, want 64 hex characters", len(tok))
	}
	path := filepath.Join(t.TempDir(), "sub", "cluster.token")
	if err := WriteTokenFile(path, tok); err != nil {
		t.Fatal(err)
	}
	st, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if st.Mode().Perm() != 0o600 {
		t.Fatalf("token file mode: got %o, want 600", st.Mode().Perm())
	}
	got, err := ReadTokenFile(path)
	if err != nil || got != tok {
		t.Fatalf("ReadTokenFile: got %q, %v; want %q", got, err, tok)
	}
	t.Setenv("GORAY_TOKEN", "")
	t.Setenv("GORAY_TOKEN_FILE", path)
	if got := ResolveToken("", "127.0.0.1:1"); got != tok {
		t.Fatalf("ResolveToken from GORAY_TOKEN_FILE: got %q, want %q", got, tok)
	}
	if got := ResolveToken("explicit", "127.0.0.1:1"); got != "explicit" {
		t.Fatalf("ResolveToken with an explicit token: got %q, want explicit", got)
	}
}

func TestAuthInterceptor(t *testing.T) {
	const token = "s3cret"
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer(ServerOptions(token)...)
	healthpb.RegisterHealthServer(srv, health.NewServer())
	go srv.Serve(lis)
	t.Cleanup(srv.Stop)

	tests := []struct {
		name, token string
		want        codes.Code
	}{
		{"no token", "", codes.Unauthenticated},
		{"wrong token", "guess", codes.Unauthenticated},
		{"right token", token, codes.OK},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			cc, err := Dial(lis.Addr().String(), tc.token)
			if err != nil {
				t.Fatal(err)
			}
			defer cc.Close()
			_, err = healthpb.NewHealthClient(cc).Check(context.Background(), &healthpb.HealthCheckRequest{})
			if got := status.Code(err); got != tc.want {
				t.Fatalf("got %v (%v), want %v", got, err, tc.want)
			}
		})
	}
}

func TestCheckListen(t *testing.T) {
	tests := []struct {
		addr string
		auth bool
		ok   bool
	}{
		{"127.0.0.1:0", false, true},
		{"localhost:6379", false, true},
		{"[::1]:0", false, true},
		{"0.0.0.0:0", false, false},
		{"10.1.2.3:6379", false, false},
		{"0.0.0.0:0", true, true},
	}
	for _, tc := range tests {
		err := CheckListen(tc.addr, tc.auth)
		if (err == nil) != tc.ok {
			t.Errorf("CheckListen(%q, auth=%v): got %v, want ok=%v", tc.addr, tc.auth, err, tc.ok)
		}
	}
}

// rawCodec sends pre-marshalled protobuf bytes as they are, so that a
// client in this process allocates nothing per call.
type rawCodec struct{}

func (rawCodec) Marshal(v any) ([]byte, error)      { return v.([]byte), nil }
func (rawCodec) Unmarshal(data []byte, v any) error { return nil }
func (rawCodec) Name() string                       { return "proto" }

// A request without the token is refused before its body is read: eight
// 15 MB requests cost the server no 15 MB buffer each (issue 14).
func TestTokenCheckedBeforeTheBody(t *testing.T) {
	const token = "s3cret"
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer(ServerOptions(token)...)
	healthpb.RegisterHealthServer(srv, health.NewServer())
	go srv.Serve(lis)
	t.Cleanup(srv.Stop)
	cc, err := Dial(lis.Addr().String(), "")
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	// HealthCheckRequest{service: 15 MB}, as wire bytes.
	name := make([]byte, 15<<20)
	body := protowire.AppendBytes(protowire.AppendTag(nil, 1, protowire.BytesType), name)
	call := func() error {
		return cc.Invoke(context.Background(), "/grpc.health.v1.Health/Check", body, new(healthpb.HealthCheckResponse), grpc.ForceCodec(rawCodec{}))
	}
	if err := call(); status.Code(err) != codes.Unauthenticated {
		t.Fatalf("15 MB request without the token: got %v, want Unauthenticated", err)
	}
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	for range 8 {
		if err := call(); status.Code(err) != codes.Unauthenticated {
			t.Fatalf("15 MB request without the token: got %v, want Unauthenticated", err)
		}
	}
	runtime.ReadMemStats(&after)
	if grew := after.TotalAlloc - before.TotalAlloc; grew > 32<<20 {
		t.Errorf("eight 15 MB requests without the token: the process allocated %d bytes, want the bodies left unread", grew)
	}
}

// The token is written only into directories of this user's own: a runtime
// directory another user could reach into is refused, and a symlink
// planted where the token is written is never followed (issue 14).
func TestTokenFileHygiene(t *testing.T) {
	t.Setenv("TMPDIR", t.TempDir())
	path := DefaultTokenPath("127.0.0.1:1234")
	victim := filepath.Join(t.TempDir(), "victim")
	if err := os.WriteFile(victim, []byte("theirs"), 0o666); err != nil {
		t.Fatal(err)
	}
	// The old fixed temporary name, planted as a symlink to the victim.
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(victim, path+".tmp"); err != nil {
		t.Fatal(err)
	}
	if err := WriteTokenFile(path, "tok"); err != nil {
		t.Fatalf("WriteTokenFile: %v", err)
	}
	if b, _ := os.ReadFile(victim); string(b) != "theirs" {
		t.Fatalf("the planted symlink's target was written: %q", b)
	}
	if got, err := ReadTokenFile(path); err != nil || got != "tok" {
		t.Fatalf("ReadTokenFile: %q, %v", got, err)
	}

	if err := os.Chmod(RuntimeDir(), 0o777); err != nil {
		t.Fatal(err)
	}
	if err := WriteTokenFile(path, "tok2"); err == nil || !strings.Contains(err.Error(), "mode 0777") {
		t.Fatalf("WriteTokenFile into a world-writable runtime dir: got %v, want an error naming its mode", err)
	}
	if err := os.Chmod(RuntimeDir(), 0o700); err != nil {
		t.Fatal(err)
	}

	tokens := filepath.Dir(path)
	if err := os.RemoveAll(tokens); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(t.TempDir(), tokens); err != nil {
		t.Fatal(err)
	}
	if err := WriteTokenFile(path, "tok3"); err == nil || !strings.Contains(err.Error(), "not a directory of its own") {
		t.Fatalf("WriteTokenFile through a symlinked tokens dir: got %v, want it refused", err)
	}
	os.Remove(tokens)

	if os.Getuid() == 0 { // only root can hand a directory to another user
		if err := os.Mkdir(tokens, 0o700); err != nil {
			t.Fatal(err)
		}
		if err := os.Chown(tokens, 65534, 65534); err != nil {
			t.Fatal(err)
		}
		if err := WriteTokenFile(path, "tok4"); err == nil || !strings.Contains(err.Error(), "owned by uid 65534") {
			t.Fatalf("WriteTokenFile into another user's tokens dir: got %v, want it refused", err)
		}
	}
}
