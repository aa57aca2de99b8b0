package main

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestSpoolQueue: records move to disk in order, delivered ones are
// dropped from a persisted file, and the file goes once drained.
func TestSpoolQueue(t *testing.T) {
	dir := t.TempDir()
	q := spoolQueue{dir: dir, pattern: "q-*.spool", memCap: 100}
	var buf []byte
	for i := range 10 { // the cap sends the later ones to disk
		q.push(int64(i), 'D', fmt.Sprintf("rec %d", i), false)
	}
	if q.f == nil || q.memLen() != 0 {
		t.Fatalf("mem %d bytes, file %v", q.memLen(), q.f)
	}
	b, _ := q.peek(30, &buf)
	if string(b) != "0 D rec 0\n1 D rec 1\n2 D rec 2\n" {
		t.Fatalf("peek = %q", b)
	}
	q.commit(len(b))
	path, lines, err := q.persist()
	if err != nil || lines != 7 {
		t.Fatalf("persist = %s, %d, %v", path, lines, err)
	}
	data, _ := os.ReadFile(path)
	if !strings.HasPrefix(string(data), "3 D rec 3\n") || strings.Count(string(data), "\n") != 7 {
		t.Errorf("file = %q", data)
	}

	q = spoolQueue{dir: dir, pattern: "r-*.spool", memCap: 1 << 20}
	q.push(1, 'I', "a", true)
	b, _ = q.peek(1000, &buf)
	q.commit(len(b))
	if q.f != nil || q.size() != 0 {
		t.Errorf("not released: %v %d", q.f, q.size())
	}
	if m, _ := filepath.Glob(filepath.Join(dir, "r-*")); len(m) != 0 {
		t.Errorf("left %v", m)
	}
}
