package files

import (
	"os"
	"syscall"
)

// syncFileRangeWrite is SYNC_FILE_RANGE_WRITE: start writing the range's
// dirty pages back, without waiting.
const syncFileRangeWrite = 0x2

// startWriteback starts writing n bytes of f at off to disk, so that the
// fsync at the end of a put finds little left to do: the disk writes while
// the rest of the file arrives.
func startWriteback(f *os.File, off, n int64) {
	_ = syscall.SyncFileRange(int(f.Fd()), off, n, syncFileRangeWrite)
}
