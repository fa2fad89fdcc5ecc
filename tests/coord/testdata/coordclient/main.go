// Command coordclient is the client process of tests/coord: it connects to
// the cluster's etcd with coord (endpoint and credentials in its
// environment) and runs one of the tests' workloads.
//
//	COORD_MODE=linz    random put, get and compare-and-swap on a few keys,
//	                   one JSON line per operation on stdout, until stdin closes
//	COORD_MODE=locker  COORD_ACQUISITIONS times: take the lock, and use the
//	                   guarded resource at COORD_RESOURCE under its token
package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"os"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/goray/goray/coord"
	"github.com/goray/goray/runtime"
)

func main() {
	ctx := context.Background()
	eps := strings.Split(os.Getenv("COORD_ENDPOINTS"), ",")
	c, err := coord.Connect(ctx, coord.WithEndpoints(eps, os.Getenv("COORD_USER"), os.Getenv("COORD_PASSWORD")))
	if err != nil {
		fmt.Fprintln(os.Stderr, "connect:", err)
		os.Exit(1)
	}
	defer c.Close()
	switch os.Getenv("COORD_MODE") {
	case "linz":
		err = linz(ctx, c)
	case "locker":
		err = locker(ctx, c)
	default:
		err = errors.New("COORD_MODE: want linz or locker")
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "coordclient:", err)
		os.Exit(1)
	}
}

// Op is one operation of a history: what was asked, what came back, and
// when it was called and returned (wall-clock ns, shared by the processes
// of one machine).
type Op struct {
	Client int    `json:"client"`
	Kind   string `json:"kind"` // put, get, cas
	Key    string `json:"key"`
	Value  string `json:"value,omitempty"`
	// Expect is a cas's expected ModRevision.
	Expect int64 `json:"expect,omitempty"`
	// Out: the value read, the revision read or written, whether a cas
	// applied; Unknown: the call failed, so its effect is unknown (a read
	// that failed is left out of the history).
	OutValue string `json:"out_value,omitempty"`
	OutRev   int64  `json:"out_rev"`
	OK       bool   `json:"ok"`
	Found    bool   `json:"found"`
	Unknown  bool   `json:"unknown,omitempty"`
	Call     int64  `json:"call"`
	Return   int64  `json:"return"`
}

func linz(ctx context.Context, c *coord.Client) error {
	id, _ := strconv.Atoi(os.Getenv("COORD_CLIENT"))
	keys := []string{"/linz/a", "/linz/b", "/linz/c"}
	var stop atomic.Bool
	go func() { io.Copy(io.Discard, os.Stdin); stop.Store(true) }()
	enc := json.NewEncoder(os.Stdout)
	lastRev := map[string]int64{}
	okOps := 0
	for n := 0; !stop.Load(); n++ {
		key := keys[rand.IntN(len(keys))]
		op := Op{Client: id, Key: key}
		octx, cancel := context.WithTimeout(ctx, 2*time.Second)
		op.Call = time.Now().UnixNano()
		var err error
		switch r := rand.IntN(10); {
		case r < 4:
			op.Kind = "get"
			var kv coord.KV
			kv, err = c.Get(octx, key)
			if errors.Is(err, runtime.ErrNotFound) {
				err = nil
			} else if err == nil {
				op.Found, op.OutValue, op.OutRev = true, string(kv.Value), kv.ModRevision
				lastRev[key] = kv.ModRevision
			}
		case r < 7:
			op.Kind, op.Value = "put", fmt.Sprintf("%d-%d", id, n)
			op.OutRev, err = c.Put(octx, key, []byte(op.Value))
		default:
			op.Kind, op.Value, op.Expect = "cas", fmt.Sprintf("%d-%d", id, n), lastRev[key]
			var cur coord.KV
			op.OutRev, op.OK, cur, err = c.CompareAndSwap(octx, key, op.Expect, []byte(op.Value))
			if err == nil && !op.OK {
				op.OutRev, op.OutValue, op.Found = cur.ModRevision, string(cur.Value), cur.Key != ""
				lastRev[key] = cur.ModRevision
			}
		}
		op.Return = time.Now().UnixNano()
		cancel()
		if err != nil {
			if op.Kind == "get" {
				continue
			}
			op.Unknown = true
		} else {
			okOps++
		}
		if err := enc.Encode(op); err != nil {
			return err
		}
		if err == nil && okOps%50 == 0 {
			fmt.Fprintf(os.Stderr, "PROGRESS %d\n", okOps)
		}
	}
	return nil
}

// locker takes the lock and uses the resource: ENTER, INCR and EXIT, each
// with the fencing token; the resource may refuse a stale token (STALE).
func locker(ctx context.Context, c *coord.Client) error {
	n, _ := strconv.Atoi(os.Getenv("COORD_ACQUISITIONS"))
	ttl, _ := time.ParseDuration(os.Getenv("COORD_TTL"))
	conn, err := net.Dial("tcp", os.Getenv("COORD_RESOURCE"))
	if err != nil {
		return err
	}
	defer conn.Close()
	rd := bufio.NewReader(conn)
	call := func(format string, args ...any) (string, error) {
		if _, err := fmt.Fprintf(conn, format+"\n", args...); err != nil {
			return "", err
		}
		line, err := rd.ReadString('\n')
		return strings.TrimSpace(line), err
	}
	s, err := c.NewSession(ctx, coord.WithTTL(ttl))
	if err != nil {
		return err
	}
	slot := os.Getenv("COORD_SLOT")
	for i := 0; i < n; i++ {
		l, err := s.Lock(ctx, "/locks/guard")
		if err != nil {
			return err
		}
		for _, step := range []string{"ENTER", "INCR", "EXIT"} {
			reply, err := call("%s %d %d %d %s", step, l.Token(), s.Lease(), os.Getpid(), slot)
			if err != nil {
				return err
			}
			if reply == "STALE" {
				break
			}
		}
		if err := l.Unlock(ctx); err != nil {
			return err
		}
	}
	return s.Close()
}
