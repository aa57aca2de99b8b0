package main

// The console spool: the queue between the shipper's writers and its
// sender. Records ("<ms> <level letter> <text>\n") sit in memory while the
// server keeps up; during an outage, or when output outpaces delivery, the
// queue moves to a file in the spool dir (clearml-console-<task>-*.spool),
// which Close leaves behind with only the undelivered records.

import (
	"bytes"
	"io"
	"os"
	"strconv"
)

const (
	shipMemHardBytes   = 64 << 20 // without a usable spool file, lines beyond this are dropped
	shipDiskFlushBytes = 64 << 10 // spooled records are written to the file in pieces this big
)

// A record is "<ms> <level letter> <text>".
func appendRecord(b []byte, ts int64, level byte, text string) []byte {
	b = strconv.AppendInt(b, ts, 10)
	b = append(b, ' ', level, ' ')
	b = append(b, text...)
	return append(b, '\n')
}

func parseRecord(r []byte) (int64, byte, []byte) {
	sp := bytes.IndexByte(r, ' ')
	if sp < 0 || len(r) < sp+3 {
		return 0, 'D', r
	}
	ts, _ := strconv.ParseInt(string(r[:sp]), 10, 64)
	return ts, r[sp+1], r[sp+3:]
}

// spoolQueue is a FIFO byte stream of records: the head in memory, the
// tail in a file. While the file exists every new record goes to it, so
// order is kept and memory stays bounded; mem is empty whenever the file
// holds data. The file is removed once drained.
type spoolQueue struct {
	dir, pattern string
	memCap       int
	mem          []byte
	head         int
	f            *os.File
	path         string
	rd, wr       int64  // stream offsets in the file; wr counts wbuf too
	wbuf         []byte // records not yet written to f
	flushAt      int
	spilled      int64 // bytes ever written to the spool
	err          error // the spool file could not be created
}

func (q *spoolQueue) memLen() int            { return len(q.mem) - q.head }
func (q *spoolQueue) diskLen() int64         { return q.wr - q.rd }
func (q *spoolQueue) size() int64            { return int64(q.memLen()) + q.diskLen() }
func (q *spoolQueue) fileLen() int64         { return q.wr - int64(len(q.wbuf)) }
func (q *spoolQueue) useDisk() bool          { return q.f != nil }
func (q *spoolQueue) recordLen(t string) int { return len(t) + 24 }

// push queues a record; toDisk asks for the spool. False: dropped.
func (q *spoolQueue) push(ts int64, level byte, text string, toDisk bool) bool {
	n := q.recordLen(text)
	if !q.useDisk() && (toDisk || q.memLen()+n > q.memCap) {
		_ = q.spill() // on failure the record stays in memory, up to the hard cap
	}
	if q.useDisk() {
		if len(q.wbuf)+n > shipMemHardBytes {
			return false
		}
		before := len(q.wbuf)
		q.wbuf = appendRecord(q.wbuf, ts, level, text)
		metricsOn().linesToSpool(1)
		q.wr += int64(len(q.wbuf) - before)
		q.spilled += int64(len(q.wbuf) - before)
		if len(q.wbuf) >= max(q.flushAt, shipDiskFlushBytes) {
			_ = q.flush()
		}
		return true
	}
	if q.memLen()+n > shipMemHardBytes {
		return false
	}
	q.mem = appendRecord(q.mem, ts, level, text)
	return true
}

// spill opens the spool file and moves the memory queue into it.
func (q *spoolQueue) spill() error {
	if q.f == nil {
		if q.err != nil {
			return q.err
		}
		f, err := os.CreateTemp(q.dir, q.pattern)
		if err != nil {
			q.err = err
			return err
		}
		q.f, q.path, q.rd, q.wr, q.wbuf = f, f.Name(), 0, 0, q.wbuf[:0]
	}
	if m := q.memLen(); m > 0 {
		if m := metricsOn(); m != nil {
			m.linesToSpool(bytes.Count(q.mem[q.head:], []byte{'\n'}))
		}
		q.wbuf = append(q.wbuf, q.mem[q.head:]...)
		q.wr += int64(m)
		q.spilled += int64(m)
		q.mem, q.head = nil, 0 // not reused: the sender may be reading it
	}
	return q.flush()
}

func (q *spoolQueue) flush() error {
	if q.f == nil || len(q.wbuf) == 0 {
		return nil
	}
	off := q.fileLen()
	if _, err := q.f.WriteAt(q.wbuf, off); err != nil {
		_ = q.f.Truncate(off) // no half record; wbuf still has it
		q.flushAt = len(q.wbuf) + 1<<20
		return err
	}
	q.wbuf, q.flushAt = q.wbuf[:0], 0
	return nil
}

// peek returns whole records from the head of the stream, about limit
// bytes; memory records are returned in place, the rest copied into buf.
func (q *spoolQueue) peek(limit int, buf *[]byte) ([]byte, error) {
	if q.memLen() > 0 {
		return cutRecords(q.mem[q.head:], limit), nil
	}
	if q.diskLen() == 0 {
		return nil, nil
	}
	n := int(min(int64(limit), q.diskLen()))
	if cap(*buf) < n {
		*buf = make([]byte, n)
	}
	b := (*buf)[:n]
	got := 0
	if fl := q.fileLen(); q.rd < fl {
		m := int(min(int64(n), fl-q.rd))
		if _, err := q.f.ReadAt(b[:m], q.rd); err != nil {
			return nil, err
		}
		got = m
	}
	if got < n {
		off := int(q.rd + int64(got) - q.fileLen())
		copy(b[got:], q.wbuf[off:])
	}
	return cutRecords(b, limit), nil
}

// cutRecords keeps the whole records of b within limit (at least one).
func cutRecords(b []byte, limit int) []byte {
	j := bytes.LastIndexByte(b[:min(len(b), limit)], '\n')
	if j < 0 {
		j = bytes.IndexByte(b, '\n')
		if j < 0 {
			return nil
		}
	}
	return b[:j+1]
}

// commit removes n delivered bytes from the head of the stream.
func (q *spoolQueue) commit(n int) {
	m := min(n, q.memLen())
	q.head += m
	n -= m
	switch {
	case q.head == len(q.mem):
		q.mem, q.head = q.mem[:0], 0
	case q.head >= 1<<20 && 2*q.head >= len(q.mem):
		q.mem, q.head = append(q.mem[:0], q.mem[q.head:]...), 0
	}
	q.rd += int64(n)
	if q.f != nil && q.rd >= q.wr {
		q.release()
	}
}

// release closes and removes the spool file.
func (q *spoolQueue) release() {
	if q.f != nil {
		_ = q.f.Close()
		_ = os.Remove(q.path)
	}
	q.f, q.path, q.rd, q.wr, q.wbuf = nil, "", 0, 0, q.wbuf[:0]
}

// persist leaves only the undelivered records in the spool file, closes
// it and returns its path and line count.
func (q *spoolQueue) persist() (string, int, error) {
	if err := q.spill(); err != nil {
		return "", 0, err
	}
	if q.rd > 0 { // drop what was delivered, so nothing is sent twice from it
		nf, err := os.CreateTemp(q.dir, q.pattern)
		if err != nil {
			return q.path, 0, err
		}
		_, err = io.Copy(nf, io.NewSectionReader(q.f, q.rd, q.wr-q.rd))
		if cerr := nf.Close(); err == nil {
			err = cerr
		}
		if err == nil {
			err = os.Rename(nf.Name(), q.path)
		}
		if err != nil {
			_ = os.Remove(nf.Name())
			return q.path, 0, err
		}
		_ = q.f.Close()
		if q.f, err = os.Open(q.path); err != nil {
			return q.path, 0, err
		}
		q.wr -= q.rd
		q.rd = 0
	}
	lines := 0
	if _, err := q.f.Seek(0, io.SeekStart); err == nil {
		buf := make([]byte, 64<<10)
		for {
			k, err := q.f.Read(buf)
			lines += bytes.Count(buf[:k], []byte{'\n'})
			if err != nil {
				break
			}
		}
	}
	path := q.path
	_ = q.f.Close()
	q.f = nil
	return path, lines, nil
}
