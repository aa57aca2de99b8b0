package main

// The daemon's resident memory. Most of an idle daemon's RSS is not its
// heap but the binary's own pages: the kernel maps the 64 KiB around every
// page fault of the text and read-only data (fault-around), so start-up,
// which runs code from every corner of the binary (configuration, HOCON,
// TLS, JSON, the printout), leaves nearly the whole binary mapped, and
// counted in RSS and VmHWM, for the life of the process. The daemon drops
// those clean file pages between the steps of its start: they stay in the
// page cache, and what the loops run is mapped in again on its next use.

import (
	"bufio"
	"bytes"
	"os"
	"runtime"
	"runtime/debug"
	"strconv"
	"syscall"
)

// idleGCPercent is a long-running command's GOGC: its live heap is well
// under a MiB, and at the default 100 the heap grows to 4 MiB of pages
// before its first collection, some ten idle minutes; at 20 it stays near
// 1 MiB, for a collection every few idle minutes.
const idleGCPercent = 20

// idleMaxProcs caps a long-running command's Ps: its loops wait on the
// network, and each P costs a thread, a GC worker and caches (on a 64-core
// host: 25 threads and 12 MiB idle instead of 8 threads and under 10 MiB).
// Tasks are other processes, with the host's cores.
const idleMaxProcs = 2

// idleMemoryMode is called as a daemon or glue starts: at most
// idleMaxProcs Ps, the GC keeps the heap small (unless the operator set
// GOGC), and the pages the start touched so far are dropped.
func idleMemoryMode() {
	if runtime.GOMAXPROCS(0) > idleMaxProcs {
		runtime.GOMAXPROCS(idleMaxProcs)
	}
	if os.Getenv("GOGC") == "" {
		debug.SetGCPercent(idleGCPercent)
	}
	dropBinaryPages()
}

// startupStep is called between the steps of a daemon's start: the
// garbage of the step before is collected and its pages returned (a
// collection of a heap this small takes about a millisecond), and the
// binary's pages it mapped dropped, so the start's peak is one step's.
func startupStep() {
	debug.FreeOSMemory()
	dropBinaryPages()
}

// startupDone is the last step, as the loops start: what stays resident
// is what the loops use.
func startupDone() { startupStep() }

// dropBinaryPages unmaps the binary's read-only pages from this process
// (MADV_DONTNEED on its r-xp and r--p mappings: private and never written,
// so the file gives the same bytes again). A mapping with anonymous pages
// (relocations the dynamic linker wrote, RELRO, in a cgo or PIE build)
// is left alone: dropping would lose them. The data segment is never touched.
func dropBinaryPages() {
	exe, err := os.Readlink("/proc/self/exe")
	if err != nil {
		return
	}
	f, err := os.Open("/proc/self/smaps")
	if err != nil {
		return
	}
	defer f.Close()
	var start, end uint64 // the current mapping, when it is a candidate
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := sc.Bytes()
		if k, v, ok := bytes.Cut(line, []byte(":")); ok && !bytes.ContainsAny(k, " -") {
			// A field of the current mapping ("Anonymous:    0 kB").
			if string(k) == "Anonymous" && end > start && string(bytes.TrimSpace(v)) == "0 kB" {
				syscall.Syscall(syscall.SYS_MADVISE, uintptr(start), uintptr(end-start), syscall.MADV_DONTNEED)
			}
			continue
		}
		// A mapping: 00400000-00884000 r-xp 00000000 08:01 1234   /path/to/clearml-agent
		start, end = 0, 0
		fields := bytes.Fields(line)
		if len(fields) < 6 || string(fields[5]) != exe {
			continue
		}
		if perms := string(fields[1]); perms != "r-xp" && perms != "r--p" {
			continue
		}
		lo, hi, ok := bytes.Cut(fields[0], []byte{'-'})
		a, err1 := strconv.ParseUint(string(lo), 16, 64)
		b, err2 := strconv.ParseUint(string(hi), 16, 64)
		if ok && err1 == nil && err2 == nil {
			start, end = a, b
		}
	}
}
