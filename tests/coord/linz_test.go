package coord_test

import (
	"encoding/json"
	"fmt"
	"math"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/anishathalye/porcupine"

	"github.com/goray/goray/internal/testcluster"
)

// op is one line of a coordclient's linz history (its Op).
type op struct {
	Client   int    `json:"client"`
	Kind     string `json:"kind"`
	Key      string `json:"key"`
	Value    string `json:"value"`
	Expect   int64  `json:"expect"`
	OutValue string `json:"out_value"`
	OutRev   int64  `json:"out_rev"`
	OK       bool   `json:"ok"`
	Found    bool   `json:"found"`
	Unknown  bool   `json:"unknown"`
	Call     int64  `json:"call"`
	Return   int64  `json:"return"`
}

// kvState is one key's state in the model: its value and ModRevision
// (revKnown false after a write whose outcome was unknown, until a read
// tells it).
type kvState struct {
	exists   bool
	val      string
	rev      int64
	revKnown bool
}

// kvModel is a key's put/get/compare-and-swap register with revisions,
// partitioned by key. An operation whose call failed (Unknown) may have
// taken effect or not: porcupine lets it linearize anywhere after its call
// (its return is +inf), and a cas whose condition is unknown branches.
var kvModel = porcupine.NondeterministicModel{
	Partition: func(history []porcupine.Operation) [][]porcupine.Operation {
		by := map[string][]porcupine.Operation{}
		var keys []string
		for _, o := range history {
			k := o.Input.(op).Key
			if _, ok := by[k]; !ok {
				keys = append(keys, k)
			}
			by[k] = append(by[k], o)
		}
		var out [][]porcupine.Operation
		for _, k := range keys {
			out = append(out, by[k])
		}
		return out
	},
	Init: func() []any { return []any{kvState{}} },
	Step: func(state, input, _ any) []any {
		s, o := state.(kvState), input.(op)
		switch o.Kind {
		case "get":
			if !o.Found {
				if s.exists {
					return nil
				}
				return []any{s}
			}
			if !s.exists || s.val != o.OutValue || (s.revKnown && s.rev != o.OutRev) {
				return nil
			}
			return []any{kvState{exists: true, val: o.OutValue, rev: o.OutRev, revKnown: true}}
		case "put":
			if o.Unknown {
				return []any{kvState{exists: true, val: o.Value}}
			}
			if s.revKnown && o.OutRev <= s.rev {
				return nil
			}
			return []any{kvState{exists: true, val: o.Value, rev: o.OutRev, revKnown: true}}
		case "cas":
			// Does the condition (ModRevision == Expect; 0: absent) hold?
			holds, known := false, true
			switch {
			case o.Expect == 0:
				holds = !s.exists
			case !s.exists:
				holds = false
			case s.revKnown:
				holds = s.rev == o.Expect
			default:
				known = false
			}
			applied := kvState{exists: true, val: o.Value, rev: o.OutRev, revKnown: !o.Unknown}
			switch {
			case o.Unknown && !known:
				return []any{s, applied}
			case o.Unknown && holds:
				return []any{applied}
			case o.Unknown:
				return []any{s}
			case o.OK && known && !holds, !o.OK && known && holds:
				return nil
			case o.OK:
				if s.revKnown && o.OutRev <= s.rev {
					return nil
				}
				return []any{applied}
			default: // failed, and the condition did not hold (or is unknown):
				// it read the key's current state.
				if o.Found != s.exists {
					return nil
				}
				if !o.Found {
					return []any{s}
				}
				if s.val != o.OutValue || (s.revKnown && s.rev != o.OutRev) {
					return nil
				}
				return []any{kvState{exists: true, val: o.OutValue, rev: o.OutRev, revKnown: true}}
			}
		}
		return nil
	},
	Equal: func(a, b any) bool { return a.(kvState) == b.(kvState) },
	DescribeOperation: func(input, _ any) string {
		o := input.(op)
		return fmt.Sprintf("%s %s %s exp=%d -> %q rev=%d ok=%t found=%t unknown=%t", o.Kind, o.Key, o.Value, o.Expect, o.OutValue, o.OutRev, o.OK, o.Found, o.Unknown)
	},
}

// TestLinearizable records concurrent histories of put, get and
// compare-and-swap on three keys from four client processes, with the head
// (and so its etcd member) SIGKILLed and restarted on its data dir in the
// middle, and checks them with porcupine.
func TestLinearizable(t *testing.T) {
	const clients = 4
	c := testcluster.NewProcesses(t, bins.raylet, bins.dir)
	head := c.StartHeadOnly("127.0.0.1:0")
	creds := readCreds(t, c.TokenFile)
	var procs []*testcluster.Proc
	for i := range clients {
		procs = append(procs, startClient(t, fmt.Sprintf("client %d", i), append(creds.env(), "COORD_MODE=linz", "COORD_CLIENT="+strconv.Itoa(i)), true))
	}
	// progress waits until every client has made n successful operations.
	progress := func(n int, what string) {
		for _, p := range procs {
			waitStderr(t, p, 60*time.Second, what, func(l string) bool {
				v, ok := strings.CutPrefix(l, "PROGRESS ")
				got, _ := strconv.Atoi(v)
				return ok && got >= n
			})
		}
	}
	progress(100, "100 operations before the restart")
	head.Kill(t)
	head = c.StartHeadOnly(head.Addr)
	if got := readCreds(t, c.TokenFile); got != creds {
		t.Fatalf("the restarted head's etcd: got %+v, want the same endpoint and credentials %+v", got, creds)
	}
	progress(300, "300 operations, some after the restart")
	var history []porcupine.Operation
	unknown := 0
	for _, p := range procs {
		p.Stdin.Close()
		if err := p.Wait(t, 30*time.Second); err != nil {
			t.Fatalf("%s: %v\n%s", p.Name(), err, p.Stderr.String())
		}
		for _, line := range strings.Split(strings.TrimSpace(p.Stdout.String()), "\n") {
			var o op
			if err := json.Unmarshal([]byte(line), &o); err != nil {
				t.Fatalf("%s: history line %q: %v", p.Name(), line, err)
			}
			ret := o.Return
			if o.Unknown {
				ret, unknown = math.MaxInt64, unknown+1
			}
			history = append(history, porcupine.Operation{ClientId: o.Client, Input: o, Call: o.Call, Output: nil, Return: ret})
		}
	}
	res := porcupine.CheckOperationsTimeout(kvModel.ToModel(), history, 2*time.Minute)
	t.Logf("%d operations (%d of unknown outcome, made while the head was down): %s", len(history), unknown, res)
	if res != porcupine.Ok {
		t.Fatalf("porcupine: got %s, want Ok: the history of put, get and compare-and-swap is not linearizable", res)
	}
}

// waitStderr waits for a stderr line of p that match accepts.
func waitStderr(t *testing.T, p *testcluster.Proc, d time.Duration, what string, match func(string) bool) {
	t.Helper()
	timer := time.NewTimer(d)
	defer timer.Stop()
	for {
		_, ok, changed := p.Stderr.Find(match)
		if ok {
			return
		}
		select {
		case <-changed:
		case <-timer.C:
			t.Fatalf("%s: no %s within %s\nstderr:\n%s", p.Name(), what, d, testcluster.Tail(p.Stderr.String()))
		}
	}
}

// TestModelRejects: the model refuses histories that are not linearizable,
// so TestLinearizable can fail.
func TestModelRejects(t *testing.T) {
	put := func(c int, v string, rev, call, ret int64) porcupine.Operation {
		return porcupine.Operation{ClientId: c, Input: op{Kind: "put", Key: "k", Value: v, OutRev: rev}, Call: call, Return: ret}
	}
	get := func(c int, v string, rev, call, ret int64) porcupine.Operation {
		return porcupine.Operation{ClientId: c, Input: op{Kind: "get", Key: "k", Found: true, OutValue: v, OutRev: rev}, Call: call, Return: ret}
	}
	cas := func(c int, exp int64, v string, ok bool, rev, call, ret int64) porcupine.Operation {
		return porcupine.Operation{ClientId: c, Input: op{Kind: "cas", Key: "k", Expect: exp, Value: v, OK: ok, OutRev: rev, Found: !ok, OutValue: "b"}, Call: call, Return: ret}
	}
	for _, tc := range []struct {
		name string
		h    []porcupine.Operation
		want porcupine.CheckResult
	}{
		{"fresh read", []porcupine.Operation{put(0, "a", 2, 0, 10), put(0, "b", 3, 20, 30), get(1, "b", 3, 40, 50)}, porcupine.Ok},
		{"stale read", []porcupine.Operation{put(0, "a", 2, 0, 10), put(0, "b", 3, 20, 30), get(1, "a", 2, 40, 50)}, porcupine.Illegal},
		{"two cas at one revision", []porcupine.Operation{put(0, "a", 2, 0, 10), cas(0, 2, "x", true, 3, 20, 30), cas(1, 2, "y", true, 4, 40, 50)}, porcupine.Illegal},
		{"revisions going back", []porcupine.Operation{put(0, "a", 5, 0, 10), put(1, "b", 4, 20, 30)}, porcupine.Illegal},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := porcupine.CheckOperationsTimeout(kvModel.ToModel(), tc.h, 10*time.Second); got != tc.want {
				t.Fatalf("got %s, want %s", got, tc.want)
			}
		})
	}
}
