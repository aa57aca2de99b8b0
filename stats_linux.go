package main

import "golang.org/x/sys/unix"

// statsProcRoot is where CPU, memory, disk and network counters are read.
const statsProcRoot = "/proc"

// statfsBlockSize is the unit of Statfs_t's block counts: f_frsize, which
// older kernels leave 0 (then f_bsize).
func statfsBlockSize(st *unix.Statfs_t) uint64 {
	if st.Frsize > 0 {
		return uint64(st.Frsize)
	}
	return uint64(st.Bsize)
}
