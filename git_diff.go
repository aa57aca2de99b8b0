package main

// The task's uncommitted changes: applied with git apply at the strip level
// the diff uses, with missing files created first, and on failure the
// first hunk git rejected quoted in the error.

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// gitApplyDiff applies the task's uncommitted changes in dir with git's
// and the user's config out of the way (diff.noprefix, apply.whitespace),
// with the strip level the diff itself uses. On failure the error names
// the first hunk git rejected.
func gitApplyDiff(ctx context.Context, dir, diff string, log io.Writer) error {
	g := &gitCheckout{log: log}
	p := gitDiffStrip(diff)
	apply := func(p int, check bool) (string, error) {
		gitTouchMissing(dir, diff, p)
		args := []string{"apply", "--unidiff-zero", "--whitespace=nowarn", "-p" + strconv.Itoa(p)}
		if check {
			args = append(args, "--check")
		}
		return g.gitExec(ctx, gitCmd{dir: dir, clean: true, stdin: diff + "\n", args: args})
	}
	out, err := apply(p, false)
	if err == nil {
		g.logf("successfully applied uncommitted changes")
		return nil
	}
	if ctx.Err() != nil {
		return fmt.Errorf("diff: %w", ctx.Err())
	}
	if _, cerr := apply(1-p, true); cerr == nil {
		if _, err2 := apply(1-p, false); err2 == nil {
			g.logf("successfully applied uncommitted changes")
			return nil
		}
	}
	hunk := gitFailingHunk(diff, out)
	hint := ""
	if strings.Contains(strings.ToLower(out), "no such file") {
		hint = "; files were missing: were the changes pushed?"
	}
	return fmt.Errorf("diff: failed applying the uncommitted changes: %w; first failing hunk: %s%s", err, strconv.Quote(hunk), hint)
}

// gitDiffStrip guesses -p: 1 for a/ b/ (or mnemonic i/ w/ c/ o/) prefixes,
// 0 for diffs made with diff.noprefix.
func gitDiffStrip(diff string) int {
	var old string
	for _, l := range strings.Split(diff, "\n") {
		switch {
		case strings.HasPrefix(l, "--- "):
			old = gitDiffPath(l[4:])
		case strings.HasPrefix(l, "+++ "):
			nw := gitDiffPath(l[4:])
			if old != "" && old != "/dev/null" && nw != "/dev/null" {
				if old == nw {
					return 0
				}
				oi, ni := strings.IndexByte(old, '/'), strings.IndexByte(nw, '/')
				if oi == 1 && ni == 1 && old[2:] == nw[2:] {
					return 1
				}
			}
		case strings.HasPrefix(l, "diff --git "):
			rest := l[len("diff --git "):]
			if n := len(rest); n%2 == 1 && rest[:n/2] == rest[n/2+1:] {
				return 0
			}
		}
	}
	return 1
}

func gitDiffPath(s string) string {
	if i := strings.IndexByte(s, '\t'); i >= 0 {
		s = s[:i]
	}
	s = strings.TrimRight(s, "\r")
	if strings.HasPrefix(s, `"`) {
		if u, err := strconv.Unquote(s); err == nil {
			s = u
		}
	}
	return s
}

// gitTouchMissing creates empty files for "--- <old>" paths that do not
// exist, as the reference does, so hunks against new files apply.
func gitTouchMissing(dir, diff string, p int) {
	for _, l := range strings.Split(diff, "\n") {
		if !strings.HasPrefix(l, "--- ") {
			continue
		}
		name := gitDiffPath(l[4:])
		if name == "/dev/null" {
			continue
		}
		for i := 0; i < p; i++ {
			_, name, _ = strings.Cut(name, "/")
		}
		target := filepath.Join(dir, filepath.FromSlash(name))
		if name == "" || !gitWithin(dir, target) {
			continue
		}
		if _, err := os.Lstat(target); errors.Is(err, fs.ErrNotExist) {
			if os.MkdirAll(filepath.Dir(target), 0o755) == nil {
				if f, err := os.OpenFile(target, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o644); err == nil {
					f.Close()
				}
			}
		}
	}
}

var gitPatchFailed = lazyRegexp(`patch failed: (.+):(\d+)`)

// gitFailingHunk finds the hunk git reported ("patch failed: f:N"), else
// the first hunk of the file it named, else the first hunk.
func gitFailingHunk(diff, gitOut string) string {
	file, line := "", ""
	if m := gitPatchFailed().FindStringSubmatch(gitOut); m != nil {
		file, line = m[1], m[2]
	} else if m := lazyRegexp(`error: (.+?): (?:does not exist|No such file|patch does not apply|already exists)`)().FindStringSubmatch(gitOut); m != nil {
		file = m[1]
	}
	type hunk struct{ file, text string }
	var hunks []hunk
	cur, inHunk := "", false
	var b []string
	flush := func() {
		if inHunk {
			hunks = append(hunks, hunk{cur, strings.Join(b, "\n")})
		}
		b, inHunk = nil, false
	}
	for _, l := range strings.Split(diff, "\n") {
		switch {
		case strings.HasPrefix(l, "diff "), strings.HasPrefix(l, "--- "):
			flush()
		case strings.HasPrefix(l, "+++ "):
			flush()
			cur = gitDiffPath(l[4:])
		case strings.HasPrefix(l, "@@"):
			flush()
			inHunk = true
			b = []string{cur + ": " + l}
		case inHunk:
			b = append(b, l)
		}
	}
	flush()
	matches := func(h hunk) bool {
		return file != "" && (h.file == file || strings.HasSuffix(h.file, "/"+file))
	}
	for _, h := range hunks {
		if matches(h) && line != "" && strings.Contains(strings.SplitN(h.text, "\n", 2)[0], "@@ -"+line) {
			return gitTrim(h.text)
		}
	}
	for _, h := range hunks {
		if matches(h) {
			return gitTrim(h.text)
		}
	}
	if len(hunks) > 0 {
		return gitTrim(hunks[0].text)
	}
	return gitTrim(diff)
}

func gitTrim(s string) string {
	const max = 1200
	if len(s) > max {
		return s[:max] + "..."
	}
	return s
}
