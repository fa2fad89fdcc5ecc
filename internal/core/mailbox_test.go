package core

import (
	"slices"
	"testing"
)

func TestMailbox(t *testing.T) {
	m := newMailbox[int]()
	for i := range 3 {
		if !m.put(i) {
			t.Fatalf("put(%d) on an open mailbox: got false, want true", i)
		}
	}
	for want := range 2 {
		if got, ok := m.next(); !ok || got != want {
			t.Fatalf("next: got %d, %v; want %d, true", got, ok, want)
		}
	}
	if rest := m.close(); !slices.Equal(rest, []int{2}) {
		t.Fatalf("close: got %v, want the one still queued, [2]", rest)
	}
	if rest := m.close(); rest != nil {
		t.Fatalf("second close: got %v, want nil", rest)
	}
	if m.put(3) {
		t.Fatal("put on a closed mailbox: got true, want false")
	}
	if got, ok := m.next(); ok {
		t.Fatalf("next on a closed mailbox: got %d, true; want false", got)
	}
}

func TestMailboxNextWaitsForPutOrClose(t *testing.T) {
	m := newMailbox[string]()
	got := make(chan string)
	go func() {
		for v, ok := m.next(); ok; v, ok = m.next() {
			got <- v
		}
		close(got)
	}()
	m.put("a")
	if v := <-got; v != "a" {
		t.Fatalf("served: got %q, want %q", v, "a")
	}
	m.close()
	if v, ok := <-got; ok {
		t.Fatalf("after close: served %q, want the server to end", v)
	}
}
