package files

import (
	"crypto/sha256"
	"encoding/hex"
	"hash/crc32"
	"strings"
	"unicode"
	"unicode/utf8"

	"github.com/goray/goray/internal/errs"
)

// BlockSize is the verification block: every block of a file has its own
// checksum (CRC-32C) in the index, a reader checks each block before
// handing it on and resumes a failed-over read at a block boundary; the
// whole content is checked against its SHA-256 (the file's address) as it
// is read, block after block, across failovers.
const BlockSize = 1 << 20

// MaxFileSize bounds a file: its block checksums (4 bytes per MiB, and
// their framing) travel in one index message, bounded to 16 MiB with the
// rest.
const MaxFileSize = 1 << 40

// castagnoli is the CRC-32C table (hardware-accelerated on amd64 and arm64).
var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// BlockSum is a block's checksum.
func BlockSum(b []byte) uint32 { return crc32.Checksum(b, castagnoli) }

// MaxNameLen bounds a name in bytes.
const MaxNameLen = 1024

// HashPrefix may start a hash written as text ("sha256:<64 hex digits>").
const HashPrefix = "sha256:"

// Hash is the SHA-256 of a file's content: its address.
type Hash [32]byte

// String is the hash in lower-case hex.
func (h Hash) String() string { return hex.EncodeToString(h[:]) }

// Sum is the hash of b.
func Sum(b []byte) Hash { return sha256.Sum256(b) }

// ParseHash parses 64 hex digits, optionally after "sha256:".
func ParseHash(s string) (Hash, error) {
	t := strings.TrimPrefix(s, HashPrefix)
	var h Hash
	if len(t) != 64 {
		return h, errs.New(errs.KindInvalidArgument, "", "malformed file hash %q: want 64 hex digits (a SHA-256), optionally after %q, got %d characters", clip(s), HashPrefix, len(t))
	}
	if _, err := hex.Decode(h[:], []byte(t)); err != nil {
		return h, errs.New(errs.KindInvalidArgument, "", "malformed file hash %q: want 64 hex digits (a SHA-256): %v", clip(s), err)
	}
	return h, nil
}

// HashFromBytes is a hash from its 32 raw bytes (the wire form).
func HashFromBytes(b []byte) (Hash, error) {
	var h Hash
	if len(b) != len(h) {
		return h, errs.New(errs.KindInvalidArgument, "", "malformed file hash: want 32 bytes (a SHA-256), got %d", len(b))
	}
	copy(h[:], b)
	return h, nil
}

// LooksLikeHash reports whether s is written as a hash rather than a name:
// it starts with "sha256:" or is 64 hex digits. Names never look like one.
func LooksLikeHash(s string) bool {
	if strings.HasPrefix(s, HashPrefix) {
		return true
	}
	if len(s) != 64 {
		return false
	}
	for _, c := range s {
		if !('0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F') {
			return false
		}
	}
	return true
}

// ValidateName checks a file name: a path of '/'-separated segments, at most
// MaxNameLen bytes of UTF-8 without control characters, no empty, "." or
// ".." segment, and not written like a hash.
func ValidateName(name string) error {
	bad := func(why string) error {
		return errs.New(errs.KindInvalidArgument, "", "malformed file name %q: %s", clip(name), why)
	}
	switch {
	case name == "":
		return bad("a name must not be empty")
	case len(name) > MaxNameLen:
		return bad("longer than 1024 bytes")
	case !utf8.ValidString(name):
		return bad("not valid UTF-8")
	case LooksLikeHash(name):
		return bad("written like a hash (64 hex digits or sha256:...); pick a name that is not")
	}
	for _, c := range name {
		if unicode.IsControl(c) {
			return bad("contains a control character")
		}
	}
	for _, seg := range strings.Split(strings.TrimPrefix(name, "/"), "/") {
		switch seg {
		case "":
			return bad("has an empty path segment (// or a trailing /)")
		case ".", "..":
			return bad("has a . or .. segment")
		}
	}
	return nil
}

// clip shortens what an error message quotes.
func clip(s string) string {
	if len(s) > 80 {
		return s[:77] + "..."
	}
	return s
}

// NumBlocks is the number of blocks of a file of size bytes.
func NumBlocks(size uint64, blockSize uint32) int {
	return int((size + uint64(blockSize) - 1) / uint64(blockSize))
}

// BlockLen is the length of block i of a file of size bytes.
func BlockLen(size uint64, blockSize uint32, i int) int {
	off := uint64(i) * uint64(blockSize)
	if size-off < uint64(blockSize) {
		return int(size - off)
	}
	return int(blockSize)
}
