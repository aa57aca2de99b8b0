package main

// CLEARML_MULTI_NODE_SINGLE_TASK: how the ranks of a multi-node run (RANK
// or SLURM_PROCID > 0) report to the one task they share, as documented
// for the SLURM glue: -1 only rank 0 reports its console; 1 and 2 every
// rank does, each line of rank n prefixed "RANK n: "; unset or 0 every
// rank reports as is. (The SDK reads the same variable for its machine
// graphs.)

import (
	"bytes"
	"io"
	"strconv"
	"strings"
	"sync"
)

// multiNodeConsole is, for this rank, the prefix of its console lines and
// whether they go to the server at all.
func multiNodeConsole(env envLookup, rank int) (prefix string, ship bool) {
	if rank <= 0 {
		return "", true
	}
	mode, err := strconv.Atoi(strings.TrimSpace(firstEnv(env, "CLEARML_MULTI_NODE_SINGLE_TASK")))
	switch {
	case err != nil || mode == 0:
		return "", true
	case mode < 0:
		return "", false
	}
	return "RANK " + strconv.Itoa(rank) + ": ", true
}

// linePrefixer writes prefix at the start of every line (from the task and
// the monitor at once: it locks).
type linePrefixer struct {
	w      io.Writer
	prefix []byte
	mu     sync.Mutex
	mid    bool // the last write did not end a line
}

func (l *linePrefixer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	var b bytes.Buffer
	for rest := p; len(rest) > 0; {
		if !l.mid {
			b.Write(l.prefix)
		}
		line, after, found := bytes.Cut(rest, []byte{'\n'})
		b.Write(line)
		if found {
			b.WriteByte('\n')
		}
		l.mid, rest = !found, after
	}
	if _, err := l.w.Write(b.Bytes()); err != nil {
		return 0, err
	}
	return len(p), nil
}
