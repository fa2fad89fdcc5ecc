package files

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/goray/goray/internal/errs"
	pb "github.com/goray/goray/proto/goray/v1"
)

func TestParseHash(t *testing.T) {
	hex := strings.Repeat("0a", 32)
	tests := []struct {
		in string
		ok bool
	}{
		{hex, true},
		{"sha256:" + hex, true},
		{strings.ToUpper(hex), true},
		{hex[:62], false},
		{"sha256:" + hex + "00", false},
		{strings.Repeat("zz", 32), false},
		{"", false},
	}
	for _, tt := range tests {
		h, err := ParseHash(tt.in)
		if tt.ok != (err == nil) {
			t.Errorf("ParseHash(%q): got %v, want ok=%t", tt.in, err, tt.ok)
		}
		if err != nil && !errors.Is(err, errs.ErrInvalidArgument) {
			t.Errorf("ParseHash(%q): got %v, want ErrInvalidArgument", tt.in, err)
		}
		if tt.ok && h.String() != hex {
			t.Errorf("ParseHash(%q): got %s, want %s", tt.in, h, hex)
		}
	}
}

func TestValidateName(t *testing.T) {
	tests := []struct {
		name string
		ok   bool
	}{
		{"a", true},
		{"data/2026/in.csv", true},
		{"/abs/path", true},
		{"ünïcode/名前", true},
		{"", false},
		{"a//b", false},
		{"a/", false},
		{"a/./b", false},
		{"../a", false},
		{"a\x00b", false},
		{"a\nb", false},
		{string([]byte{0xff, 0xfe}), false},
		{strings.Repeat("x", MaxNameLen+1), false},
		{strings.Repeat("ab", 32), false}, // written like a hash
		{"sha256:whatever", false},
	}
	for _, tt := range tests {
		err := ValidateName(tt.name)
		if tt.ok != (err == nil) {
			t.Errorf("ValidateName(%q): got %v, want ok=%t", clip(tt.name), err, tt.ok)
		}
		if err != nil && !errors.Is(err, errs.ErrInvalidArgument) {
			t.Errorf("ValidateName(%q): got %v, want ErrInvalidArgument", clip(tt.name), err)
		}
	}
}

func FuzzRef(f *testing.F) {
	for _, s := range []string{"a/b", "sha256:" + strings.Repeat("0", 64), "..", "", "\x00"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		h, n, err := lookupRequest(s)
		if err == nil && (len(h) == 32) == (n != "") {
			t.Fatalf("lookupRequest(%q): got hash %x and name %q, want exactly one", s, h, n)
		}
	})
}

func TestDiskWriter(t *testing.T) {
	d, err := OpenDisk(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	data := bytes.Repeat([]byte("0123456789"), 300_000) // 3 MB: 2 full blocks and a short one
	w, err := d.Create()
	if err != nil {
		t.Fatal(err)
	}
	for off := 0; off < len(data); off += 777_777 { // writes that straddle blocks
		if _, err := w.Write(data[off:min(off+777_777, len(data))]); err != nil {
			t.Fatal(err)
		}
	}
	blocks := w.Blocks()
	h := w.Sum()
	if want := Hash(sha256.Sum256(data)); h != want {
		t.Fatalf("Sum: got %s, want %s", h, want)
	}
	if len(blocks) != NumBlocks(uint64(len(data)), BlockSize) {
		t.Fatalf("blocks: got %d, want %d", len(blocks), NumBlocks(uint64(len(data)), BlockSize))
	}
	for i, b := range blocks {
		off := i * BlockSize
		if b != BlockSum(data[off:min(off+BlockSize, len(data))]) {
			t.Fatalf("block %d: wrong checksum", i)
		}
	}
	if err := w.Commit(h); err != nil {
		t.Fatal(err)
	}
	w.Abort() // after Commit: does nothing
	if got, err := os.ReadFile(d.Path(h)); err != nil || !bytes.Equal(got, data) {
		t.Fatalf("committed replica: got %d bytes (%v), want %d", len(got), err, len(data))
	}
	// An aborted write leaves nothing.
	w2, _ := d.Create()
	w2.Write(data[:10])
	w2.Abort()
	if tmp, _ := os.ReadDir(filepath.Join(d.Dir(), ".tmp")); len(tmp) != 0 {
		t.Fatalf("temporary files after Abort: %v", tmp)
	}
	ls, err := d.List()
	if err != nil || len(ls) != 1 || ls[0].Hash != h || ls[0].Size != uint64(len(data)) {
		t.Fatalf("List: got %v, %v; want the one replica", ls, err)
	}
	if _, err := d.Open(Sum([]byte("nope"))); !errors.Is(err, errs.ErrNotFound) {
		t.Fatalf("Open of a missing replica: got %v, want ErrNotFound", err)
	}

	// The verifier accepts the blocks in order and refuses a flipped byte.
	info := &pb.FileInfo{Sha256: h[:], Size: uint64(len(data)), BlockSize: BlockSize, BlockCrc32C: blocks}
	v, err := newVerifier(info)
	if err != nil {
		t.Fatal(err)
	}
	if err := v.check(0, data[:BlockSize]); err != nil {
		t.Fatal(err)
	}
	bad := bytes.Clone(data[BlockSize : 2*BlockSize])
	bad[5] ^= 1
	if err := v.check(BlockSize, bad); !errors.Is(err, errCorrupt) {
		t.Fatalf("a flipped byte: got %v, want a corrupt block", err)
	}
	if err := v.check(2*BlockSize, data[2*BlockSize:]); !errors.Is(err, errCorrupt) {
		t.Fatalf("a block out of order: got %v, want a corrupt block", err)
	}
	if v.offset() != BlockSize {
		t.Fatalf("verified offset: got %d, want %d", v.offset(), BlockSize)
	}
	// A Disk opened again clears what a crash left in .tmp.
	w3, _ := d.Create()
	w3.Write(data[:10])
	defer w3.Abort()
	if _, err := OpenDisk(filepath.Dir(d.Dir())); err != nil {
		t.Fatal(err)
	}
	if tmp, _ := os.ReadDir(filepath.Join(d.Dir(), ".tmp")); len(tmp) != 0 {
		t.Fatalf("temporary files after reopening: %v", tmp)
	}
}
