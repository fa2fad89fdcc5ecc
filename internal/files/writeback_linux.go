package files

import (
	"os"
	"syscall"
	"unsafe"
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

// directAlign is the alignment O_DIRECT asks of a write's memory, length
// and file offset (the page size; every block device's sector size divides
// it).
const directAlign = 4096

// openDirect opens the file at path again for writing with O_DIRECT: the
// writes go from the chunk's memory to the device, without the kernel
// copying them into the page cache (which costs as much CPU as the copy
// and, when memory is short, the reclaim of other pages). nil where the
// file system does not take O_DIRECT.
func openDirect(path string) *os.File {
	f, err := os.OpenFile(path, os.O_WRONLY|syscall.O_DIRECT, 0)
	if err != nil {
		return nil
	}
	return f
}

// directOK reports whether p may be written with O_DIRECT at off.
func directOK(p []byte, off uint64) bool {
	return len(p) > 0 && len(p)%directAlign == 0 && off%directAlign == 0 &&
		uintptr(unsafe.Pointer(unsafe.SliceData(p)))%directAlign == 0
}
