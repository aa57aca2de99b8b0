package main

// The idle memory measures of mem_linux.go are Linux's: the fleet's
// daemons run there; on macOS they do nothing.
func idleMemoryMode()  {}
func startupDone()     {}
func startupStep()     {}
func dropBinaryPages() {}
