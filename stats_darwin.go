package main

import "golang.org/x/sys/unix"

// statsProcRoot is empty on macOS: there is no /proc, and CPU and memory
// would need Mach host statistics (cgo), so a macOS worker reports disk
// space (statfs) and GPUs only; the server shows the other graphs empty.
const statsProcRoot = ""

// statfsBlockSize: macOS counts blocks in f_bsize units.
func statfsBlockSize(st *unix.Statfs_t) uint64 { return uint64(st.Bsize) }
