package main

// A HOCON parser covering what clearml.conf files use (see
// shared/reference/agent-daemon.md §2.2): comments, nested and dotted keys with
// deep merging, quoted and unquoted strings, lists, substitutions, value
// concatenation, includes and +=.
//
// Parsing builds the tree directly. Values that need substitutions are kept
// as pending nodes (*hoconSubst, *hoconConcat, *hoconMerge) and replaced in a
// second pass once the whole document is known, so forward references work.

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"unicode/utf16"
	"unicode/utf8"
)

const (
	hoconMaxDepth        = 256      // nesting of objects, lists and key segments
	hoconMaxIncludeDepth = 32       // nested include files
	hoconMaxIncludeSize  = 16 << 20 // bytes per included file
	hoconMaxSubstDepth   = 512      // substitutions resolved inside one another
	hoconExpandBudget    = 1 << 18  // units of copying per parse (see hoconCloneValue)
)

// hoconError is a parse or resolution error located in a source file.
type hoconError struct {
	File      string
	Line, Col int
	Msg       string
}

func (e *hoconError) Error() string {
	return fmt.Sprintf("%s:%d:%d: %s", e.File, e.Line, e.Col, e.Msg)
}

// hoconObject is an object that remembers the order in which keys were first set.
type hoconObject struct {
	keys []string
	vals map[string]any
}

func newHOCONObject() *hoconObject {
	return &hoconObject{vals: make(map[string]any)}
}

// Keys returns the keys in insertion order.
func (o *hoconObject) Keys() []string {
	if o == nil {
		return nil
	}
	return slices.Clone(o.keys)
}

// Get returns the value of one key (no path splitting).
func (o *hoconObject) Get(key string) (any, bool) {
	if o == nil {
		return nil, false
	}
	v, ok := o.vals[key]
	return v, ok
}

// Set sets one key; an existing key keeps its position.
func (o *hoconObject) Set(key string, v any) {
	if o.vals == nil {
		o.vals = make(map[string]any)
	}
	if _, ok := o.vals[key]; !ok {
		o.keys = append(o.keys, key)
	}
	o.vals[key] = v
}

// Delete removes one key.
func (o *hoconObject) Delete(key string) {
	if o == nil {
		return
	}
	if _, ok := o.vals[key]; !ok {
		return
	}
	delete(o.vals, key)
	if i := slices.Index(o.keys, key); i >= 0 {
		o.keys = slices.Delete(o.keys, i, i+1)
	}
}

// Lookup walks nested objects by key segments.
func (o *hoconObject) Lookup(path ...string) (any, bool) {
	if o == nil {
		return nil, false
	}
	var cur any = o
	for _, k := range path {
		obj, ok := cur.(*hoconObject)
		if !ok || obj == nil {
			return nil, false
		}
		if cur, ok = obj.vals[k]; !ok {
			return nil, false
		}
	}
	return cur, true
}

// SetPath sets a nested key, creating (or replacing non-object) intermediate
// values with objects. An object set over an object is deep-merged into it.
func (o *hoconObject) SetPath(v any, path ...string) {
	if len(path) == 0 {
		if obj, ok := v.(*hoconObject); ok {
			o.Merge(obj)
		}
		return
	}
	cur := o
	for _, k := range path[:len(path)-1] {
		next, ok := cur.vals[k].(*hoconObject)
		if !ok || next == nil {
			next = newHOCONObject()
			cur.Set(k, next)
		}
		cur = next
	}
	hoconAssign(cur, path[len(path)-1], v)
}

// Merge deep-merges a copy of other into o; other wins, and its new keys are
// appended in its order.
func (o *hoconObject) Merge(other *hoconObject) {
	if other == nil {
		return
	}
	for _, k := range other.keys {
		hoconAssign(o, k, hoconCloneValue(other.vals[k], nil))
	}
}

// Clone returns a deep copy.
func (o *hoconObject) Clone() *hoconObject {
	if o == nil {
		return nil
	}
	return hoconCloneValue(o, nil).(*hoconObject)
}

// Pending nodes, present only until substitutions are resolved.
type (
	// hoconSubst is ${path} or ${?path}.
	hoconSubst struct {
		path     []string
		prefix   []string // location of the include it came from; tried first
		optional bool
		envOnly  bool // self-reference with no earlier value: only the environment can supply it
		text     string
		src      *hoconSource
		off      int
	}
	// hoconConcat is a value concatenation; ws[i] is the whitespace between
	// pieces[i] and pieces[i+1].
	hoconConcat struct {
		pieces []any
		ws     []string
		src    *hoconSource
		off    int
	}
	// hoconMerge holds successive values of one key, merged in order once
	// resolved (objects merge, anything else replaces, undefined is skipped).
	hoconMerge struct{ vals []any }
	// hoconUnquoted is an unquoted token inside a concatenation: it keeps its
	// source text, and becomes a number/bool/null only if it ends up alone.
	hoconUnquoted string
	// hoconUndefined stands for an undefined optional substitution.
	hoconUndefined struct{}
)

func hoconIsPending(v any) bool {
	switch v.(type) {
	case *hoconSubst, *hoconConcat, *hoconMerge:
		return true
	}
	return false
}

// hoconAssign sets obj[key] to v with HOCON merge rules: object over object
// merges, a pending value is merged later, anything else replaces.
func hoconAssign(obj *hoconObject, key string, v any) {
	old, ok := obj.vals[key]
	if !ok {
		obj.Set(key, v)
		return
	}
	switch nv := v.(type) {
	case *hoconSubst, *hoconConcat, *hoconMerge:
		obj.vals[key] = hoconMergeNode(old, v)
		return
	case *hoconObject:
		if nv == nil {
			break
		}
		switch ov := old.(type) {
		case *hoconObject:
			if ov != nil {
				hoconMergeObjects(ov, nv)
				return
			}
		case *hoconSubst, *hoconConcat, *hoconMerge:
			obj.vals[key] = hoconMergeNode(old, v)
			return
		}
	}
	obj.vals[key] = v
}

func hoconMergeObjects(dst, src *hoconObject) {
	for _, k := range src.keys {
		hoconAssign(dst, k, src.vals[k])
	}
}

func hoconMergeNode(old, v any) *hoconMerge {
	m, ok := old.(*hoconMerge)
	if !ok {
		m = &hoconMerge{vals: []any{old}}
	}
	if nm, ok := v.(*hoconMerge); ok {
		m.vals = append(m.vals, nm.vals...)
	} else {
		m.vals = append(m.vals, v)
	}
	return m
}

// hoconCloneValue deep-copies v. With a budget, each copied value spends one
// unit, an object four more, a string one per 32 bytes; copying stops once
// the budget is negative. This bounds substitutions that double in size.
func hoconCloneValue(v any, budget *int) any {
	if budget != nil {
		if _, ok := v.(*hoconObject); ok {
			*budget -= 4
		}
		if *budget--; *budget < 0 {
			return nil
		}
	}
	switch t := v.(type) {
	case *hoconObject:
		if t == nil {
			return t
		}
		c := &hoconObject{keys: slices.Clone(t.keys), vals: make(map[string]any, len(t.vals))}
		for k, e := range t.vals {
			c.vals[k] = hoconCloneValue(e, budget)
		}
		return c
	case []any:
		c := make([]any, len(t))
		for i, e := range t {
			c[i] = hoconCloneValue(e, budget)
		}
		return c
	case string:
		if budget != nil {
			*budget -= len(t) / 32
		}
	case *hoconConcat:
		c := *t
		c.pieces = make([]any, len(t.pieces))
		for i, e := range t.pieces {
			c.pieces[i] = hoconCloneValue(e, budget)
		}
		return &c
	case *hoconMerge:
		c := &hoconMerge{vals: make([]any, len(t.vals))}
		for i, e := range t.vals {
			c.vals[i] = hoconCloneValue(e, budget)
		}
		return c
	}
	// Scalars and *hoconSubst are immutable and can be shared.
	return v
}

// splitHOCONPath splits a path expression: `a.b."c.d"` -> [a b c.d].
func splitHOCONPath(s string) ([]string, error) {
	segs, end, _, msg := hoconScanPath([]byte(s), 0, nil)
	if msg == "" && end != len(s) {
		msg = "unexpected newline"
	}
	if msg != "" {
		return nil, fmt.Errorf("invalid path %q: %s", s, msg)
	}
	return segs, nil
}

// parseHOCONFile reads and parses a file.
func parseHOCONFile(path string, env func(string) (string, bool)) (*hoconObject, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	return parseHOCON(path, data, env)
}

// parseHOCON parses a document. name appears in errors and its directory is
// the base for relative includes; env supplies ${ENV} values (nil: os.LookupEnv).
func parseHOCON(name string, src []byte, env func(string) (string, bool)) (*hoconObject, error) {
	if env == nil {
		env = os.LookupEnv
	}
	root := newHOCONObject()
	p := &hoconParser{
		env:    env,
		budget: hoconExpandBudget,
		frames: []hoconFrame{{obj: root, path: []string{}}},
	}
	if abs, err := filepath.Abs(name); err == nil && name != "" {
		p.includes = []string{abs}
	}
	if err := p.parseSource(&hoconSource{name: name, dir: filepath.Dir(name), data: src}); err != nil {
		return nil, err
	}
	if p.hasSubst {
		r := &hoconResolver{p: p, root: root, active: map[hoconSlot]int{}, done: map[hoconSlot]bool{}}
		if err := r.resolveObject(root, nil); err != nil {
			return nil, err
		}
	}
	return root, nil
}

// hoconSource is one file being parsed.
type hoconSource struct {
	name, dir string
	data      []byte
}

func (s *hoconSource) errAt(off int, format string, args ...any) *hoconError {
	line, col := s.lineCol(off)
	return &hoconError{File: s.name, Line: line, Col: col, Msg: fmt.Sprintf(format, args...)}
}

func (s *hoconSource) lineCol(off int) (int, int) {
	off = min(max(off, 0), len(s.data))
	line := 1 + bytes.Count(s.data[:off], []byte{'\n'})
	start := bytes.LastIndexByte(s.data[:off], '\n') + 1
	return line, utf8.RuneCount(s.data[start:off]) + 1
}

type hoconFrame struct {
	obj  *hoconObject
	path []string // absolute path of obj; nil when not addressable (inside a list)
}

type hoconParser struct {
	src      *hoconSource
	data     []byte
	pos      int
	prefix   []string // path at which the current file is included
	frames   []hoconFrame
	depth    int
	includes []string // absolute paths of the files being parsed, outermost first
	env      func(string) (string, bool)
	hasSubst bool
	budget   int
	// usedPrior is set while parsing a value that includes the key's own
	// earlier value (`a = ${a} x`, `a += x`).
	usedPrior bool
}

func (p *hoconParser) errAt(off int, format string, args ...any) error {
	return p.src.errAt(off, format, args...)
}

func (p *hoconParser) eof() bool { return p.pos >= len(p.data) }

func (p *hoconParser) peek(n int) byte {
	if p.pos+n < len(p.data) {
		return p.data[p.pos+n]
	}
	return 0
}

func (p *hoconParser) hasPrefix(s string) bool {
	return bytes.HasPrefix(p.data[p.pos:], []byte(s))
}

func hoconIsHSpace(c byte) bool {
	return c == ' ' || c == '\t' || c == '\r' || c == '\f' || c == '\v'
}

func (p *hoconParser) skipHSpace() {
	for p.pos < len(p.data) && hoconIsHSpace(p.data[p.pos]) {
		p.pos++
	}
}

func (p *hoconParser) atComment() bool {
	c := p.peek(0)
	return c == '#' || (c == '/' && p.peek(1) == '/')
}

// skipComment skips a comment up to (not including) the end of the line.
func (p *hoconParser) skipComment() {
	if !p.atComment() {
		return
	}
	if i := bytes.IndexByte(p.data[p.pos:], '\n'); i >= 0 {
		p.pos += i
	} else {
		p.pos = len(p.data)
	}
}

// skipAll skips whitespace, newlines and comments.
func (p *hoconParser) skipAll() {
	for {
		p.skipHSpace()
		p.skipComment()
		if p.eof() || p.data[p.pos] != '\n' {
			return
		}
		p.pos++
	}
}

// skipOptionalComma skips blank lines and comments after a value, and one
// comma if it comes next (a separator may start the following line).
func (p *hoconParser) skipOptionalComma() {
	p.skipAll()
	if p.peek(0) == ',' && !p.eof() {
		p.pos++
	}
}

// atValueEnd reports whether the current byte ends a value.
func (p *hoconParser) atValueEnd() bool {
	if p.eof() {
		return true
	}
	switch p.data[p.pos] {
	case '\n', ',', '}', ']':
		return true
	}
	return p.atComment()
}

func (p *hoconParser) describe() string {
	if p.eof() {
		return "end of file"
	}
	if p.data[p.pos] == '\n' {
		return "end of line"
	}
	r, _ := utf8.DecodeRune(p.data[p.pos:])
	return strconv.QuoteRune(r)
}

func (p *hoconParser) line(off int) int {
	l, _ := p.src.lineCol(off)
	return l
}

// parseSource parses one file into the current frame.
func (p *hoconParser) parseSource(src *hoconSource) error {
	saveSrc, saveData, savePos := p.src, p.data, p.pos
	defer func() { p.src, p.data, p.pos = saveSrc, saveData, savePos }()
	src.data = bytes.TrimPrefix(src.data, []byte("\xef\xbb\xbf"))
	p.src, p.data, p.pos = src, src.data, 0
	if err := hoconCheckText(src); err != nil {
		return err
	}

	p.skipAll()
	if p.eof() {
		return nil
	}
	switch p.data[p.pos] {
	case '[':
		return p.errAt(p.pos, "the document root must be an object, not a list")
	case '{':
		open := p.pos
		if err := p.enter(open); err != nil {
			return err
		}
		p.pos++
		if err := p.parseObjectBody(true, open); err != nil {
			return err
		}
		p.depth--
		p.skipAll()
		if !p.eof() {
			return p.errAt(p.pos, "unexpected %s after the closing '}' of the document", p.describe())
		}
		return nil
	}
	return p.parseObjectBody(false, 0)
}

// hoconCheckText refuses a file that is not text: a NUL byte (a binary or
// UTF-16 file) or bytes that are not UTF-8 would otherwise be read as
// quietly mangled values. The error points at the first bad byte.
func hoconCheckText(src *hoconSource) error {
	d := src.data
	nul := bytes.IndexByte(d, 0)
	bad := -1
	if !utf8.Valid(d) {
		for i := 0; i < len(d); {
			r, n := utf8.DecodeRune(d[i:])
			if r == utf8.RuneError && n <= 1 {
				bad = i
				break
			}
			i += n
		}
	}
	switch {
	case nul >= 0 && (bad < 0 || nul < bad):
		return src.errAt(nul, "the file contains a NUL byte: it is not a text file (save it as UTF-8 text)")
	case bad >= 0:
		return src.errAt(bad, "the file is not UTF-8 text (byte 0x%02x): save it as UTF-8", d[bad])
	}
	return nil
}

func (p *hoconParser) enter(off int) error {
	if p.depth++; p.depth > hoconMaxDepth {
		return p.errAt(off, "nesting too deep (more than %d levels)", hoconMaxDepth)
	}
	return nil
}

// parseObjectBody parses members into the top frame until '}' (braced) or EOF.
func (p *hoconParser) parseObjectBody(braced bool, open int) error {
	for {
		p.skipAll()
		if p.eof() {
			if braced {
				return p.errAt(p.pos, "expected '}' to close object opened at line %d", p.line(open))
			}
			return nil
		}
		switch p.data[p.pos] {
		case '}':
			if braced {
				p.pos++
				return nil
			}
			return p.errAt(p.pos, "unexpected '}'")
		case ']':
			return p.errAt(p.pos, "unexpected ']'")
		case ',':
			return p.errAt(p.pos, "unexpected ','")
		}
		if err := p.parseMember(); err != nil {
			return err
		}
		if !p.endItem('}') {
			return p.errAt(p.pos, "expected ',' or a new line after a value, found %s", p.describe())
		}
	}
}

// endItem consumes what may follow an object member or list item: a comma,
// a new line (with an optional comma after it), or nothing before closer or
// EOF. It reports false when something else follows.
func (p *hoconParser) endItem(closer byte) bool {
	p.skipHSpace()
	p.skipComment()
	if p.eof() {
		return true
	}
	switch p.data[p.pos] {
	case ',':
		p.pos++
	case '\n':
		p.skipOptionalComma()
	case closer:
	default:
		return false
	}
	return true
}

// atInclude reports whether an include directive (not a key named include) starts here.
func (p *hoconParser) atInclude() bool {
	if !p.hasPrefix("include") {
		return false
	}
	i := p.pos + len("include")
	if i >= len(p.data) || !hoconIsHSpace(p.data[i]) {
		return false
	}
	for i < len(p.data) && hoconIsHSpace(p.data[i]) {
		i++
	}
	rest := p.data[i:]
	for _, s := range []string{`"`, "file(", "required(", "url(", "classpath("} {
		if bytes.HasPrefix(rest, []byte(s)) {
			return true
		}
	}
	return false
}

func hoconKeyStop(d []byte, i int) bool {
	switch c := d[i]; c {
	case ':', '=', '{', '}', '[', ']', ',', '#':
		return true
	case '/', '+', '$':
		if i+1 < len(d) {
			n := d[i+1]
			return (c == '/' && n == '/') || (c == '+' && n == '=') || (c == '$' && n == '{')
		}
	}
	return false
}

func (p *hoconParser) parseMember() error {
	outerUsedPrior := p.usedPrior // members nest inside object values
	defer func() { p.usedPrior = outerUsedPrior }()
	start := p.pos
	if p.atInclude() {
		return p.parseInclude()
	}
	keyPath, end, errOff, msg := hoconScanPath(p.data, p.pos, hoconKeyStop)
	if msg != "" {
		if errOff == p.pos && msg == "expected a key" {
			msg = "expected a key, found " + p.describe()
		}
		return p.errAt(errOff, "%s", msg)
	}
	p.pos = end
	keyText := strings.Join(keyPath, ".")
	if p.depth+len(keyPath) > hoconMaxDepth {
		return p.errAt(start, "nesting too deep (more than %d levels)", hoconMaxDepth)
	}
	p.skipHSpace()
	appendOp := false
	switch c := p.peek(0); {
	case p.eof():
		return p.errAt(p.pos, "expected ':', '=' or '{' after key %q, found end of file", keyText)
	case c == '{':
	case c == ':' || c == '=':
		p.pos++
		p.skipHSpace()
	case c == '+' && p.peek(1) == '=':
		appendOp = true
		p.pos += 2
		p.skipHSpace()
	default:
		return p.errAt(p.pos, "expected ':', '=' or '{' after key %q, found %s", keyText, p.describe())
	}
	if p.atValueEnd() {
		return p.errAt(p.pos, "expected a value for key %q, found %s", keyText, p.describe())
	}

	top := p.frames[len(p.frames)-1]
	var field []string
	if top.path != nil {
		field = hoconJoinPath(top.path, keyPath)
	}
	p.depth += len(keyPath) - 1
	defer func() { p.depth -= len(keyPath) - 1 }()
	var v any
	var err error
	if appendOp {
		var elem any
		if elem, err = p.parseValue(nil); err != nil {
			return err
		}
		p.usedPrior = false
		if v, err = p.appendValue(keyPath, elem, start); err != nil {
			return err
		}
	} else {
		p.usedPrior = false
		if v, err = p.parseValue(field); err != nil {
			return err
		}
	}
	if _, undef := v.(hoconUndefined); !undef {
		// A value built on the key's earlier value replaces it: merging the
		// two would hold the earlier value twice.
		hoconSetField(top.obj, keyPath, v, p.usedPrior)
	}
	return nil
}

// appendValue builds the value of `key += elem`: the earlier list plus elem.
func (p *hoconParser) appendValue(keyPath []string, elem any, off int) (any, error) {
	// Fast path: a list set earlier in this same object is replaced by the
	// result, so it can be extended in place instead of copied.
	if v, ok := p.frames[len(p.frames)-1].obj.Lookup(keyPath...); ok {
		if list, ok := v.([]any); ok {
			return append(list, elem), nil
		}
	}
	prior, ok, err := p.lookupPrior(keyPath, off, false)
	if err != nil {
		return nil, err
	}
	if !ok {
		return []any{elem}, nil
	}
	p.usedPrior = true
	switch t := prior.(type) {
	case []any:
		return append(t, elem), nil
	case *hoconSubst, *hoconConcat, *hoconMerge:
		return &hoconConcat{pieces: []any{prior, []any{elem}}, ws: []string{""}, src: p.src, off: off}, nil
	}
	return nil, p.errAt(off, "cannot append with += to %q: it is not a list", strings.Join(keyPath, "."))
}

// hoconSetField sets a (possibly dotted) key inside obj, merging as HOCON does
// unless replace is set.
func hoconSetField(obj *hoconObject, keyPath []string, v any, replace bool) {
	cur := obj
	for _, k := range keyPath[:len(keyPath)-1] {
		switch old := cur.vals[k].(type) {
		case *hoconObject:
			if old != nil {
				cur = old
				continue
			}
		case *hoconMerge:
			if last, ok := old.vals[len(old.vals)-1].(*hoconObject); ok && last != nil {
				cur = last
				continue
			}
			n := newHOCONObject()
			old.vals = append(old.vals, n)
			cur = n
			continue
		case *hoconSubst, *hoconConcat:
			n := newHOCONObject()
			cur.vals[k] = &hoconMerge{vals: []any{old, n}}
			cur = n
			continue
		}
		n := newHOCONObject()
		cur.Set(k, n)
		cur = n
	}
	if replace {
		cur.Set(keyPath[len(keyPath)-1], v)
	} else {
		hoconAssign(cur, keyPath[len(keyPath)-1], v)
	}
}

// lookupPrior finds the value that rel (relative to the top frame) has so far,
// combining the enclosing objects that will be merged together. The result is
// a copy, except for the top frame's own value when copyTop is false (for a
// caller that uses it once and replaces it).
func (p *hoconParser) lookupPrior(rel []string, off int, copyTop bool) (any, bool, error) {
	top := len(p.frames) - 1
	var found []any
	var fromTop []bool
	for i, f := range p.frames {
		var v any
		ok := false
		switch {
		case i == top && f.path == nil:
			v, ok = f.obj.Lookup(rel...)
		case f.path != nil && p.frames[top].path != nil:
			abs := hoconJoinPath(p.frames[top].path, rel)
			if len(f.path) <= len(abs) && slices.Equal(abs[:len(f.path)], f.path) {
				v, ok = f.obj.Lookup(abs[len(f.path):]...)
			}
		}
		if ok {
			found = append(found, v)
			fromTop = append(fromTop, i == top)
		}
	}
	if len(found) == 0 {
		return nil, false, nil
	}
	tmp := newHOCONObject()
	for i, v := range found {
		if copyTop || !fromTop[i] {
			if v = hoconCloneValue(v, &p.budget); p.budget < 0 {
				return nil, false, p.errAt(off, "substitutions expand to too much data")
			}
		}
		hoconAssign(tmp, "", v)
	}
	v, _ := tmp.Get("")
	return v, true, nil
}

func hoconJoinPath(a, b []string) []string {
	out := make([]string, 0, len(a)+len(b))
	return append(append(out, a...), b...)
}

// parseValue parses a value (a concatenation of pieces) up to the end of the
// value. field is the absolute path of the key being set (nil inside lists); it
// places nested objects and detects self-references.
func (p *hoconParser) parseValue(field []string) (any, error) {
	start := p.pos
	if p.atValueEnd() {
		return nil, p.errAt(p.pos, "expected a value, found %s", p.describe())
	}
	var pieces []any
	var ws []string
	pending := false
	for {
		var piece any
		var err error
		switch c := p.data[p.pos]; {
		case c == '"':
			piece, err = p.parseQuoted()
		case c == '$' && p.peek(1) == '{':
			piece, err = p.parseSubst(field)
		case c == '{':
			piece, err = p.parseObject(field)
		case c == '[':
			piece, err = p.parseList()
		default:
			piece = p.scanUnquoted()
		}
		if err != nil {
			return nil, err
		}
		pending = pending || hoconIsPending(piece)
		pieces = append(pieces, piece)
		wsStart := p.pos
		p.skipHSpace()
		if p.atValueEnd() {
			break
		}
		ws = append(ws, string(p.data[wsStart:p.pos]))
	}
	if len(pieces) == 1 {
		if u, ok := pieces[0].(hoconUnquoted); ok {
			return hoconInferScalar(string(u)), nil
		}
		return pieces[0], nil
	}
	if pending {
		return &hoconConcat{pieces: pieces, ws: ws, src: p.src, off: start}, nil
	}
	// Literal pieces grow linearly with the input: no budget needed (copies
	// of earlier values were already charged by lookupPrior).
	v, def, err := hoconCombine(pieces, ws, nil)
	if err != nil {
		return nil, p.errAt(start, "%v", err)
	}
	if !def {
		return hoconUndefined{}, nil
	}
	return v, nil
}

// scanUnquoted reads an unquoted token. `//` inside a token (as in a URL)
// does not start a comment; whitespace or a special character ends it.
func (p *hoconParser) scanUnquoted() hoconUnquoted {
	start := p.pos
	for p.pos < len(p.data) {
		switch c := p.data[p.pos]; c {
		case ' ', '\t', '\r', '\f', '\v', '\n', '"', '{', '}', '[', ']', ',', '#':
			return hoconUnquoted(p.data[start:p.pos])
		case '$':
			if p.peek(1) == '{' {
				return hoconUnquoted(p.data[start:p.pos])
			}
		}
		p.pos++
	}
	return hoconUnquoted(p.data[start:p.pos])
}

func (p *hoconParser) parseQuoted() (string, error) {
	var s string
	var end, errOff int
	var msg string
	if p.hasPrefix(`"""`) {
		s, end, errOff, msg = hoconScanTriple(p.data, p.pos)
	} else {
		s, end, errOff, msg = hoconScanQuoted(p.data, p.pos)
	}
	if msg != "" {
		return "", p.errAt(errOff, "%s", msg)
	}
	p.pos = end
	return s, nil
}

func (p *hoconParser) parseSubst(field []string) (any, error) {
	open := p.pos
	p.pos += 2
	p.skipHSpace()
	optional := false
	if p.peek(0) == '?' {
		optional = true
		p.pos++
	}
	textStart := p.pos
	segs, end, errOff, msg := hoconScanPath(p.data, p.pos, func(d []byte, i int) bool { return d[i] == '}' })
	if msg != "" {
		if msg == "expected a key" {
			msg, errOff = "empty substitution path", open
		}
		return nil, p.errAt(errOff, "bad substitution: %s", msg)
	}
	p.pos = end
	if p.peek(0) != '}' {
		return nil, p.errAt(open, "unterminated substitution: expected '}' to close '${'")
	}
	s := &hoconSubst{
		path: segs, prefix: p.prefix, optional: optional,
		text: strings.TrimSpace(string(p.data[textStart:p.pos])), src: p.src, off: open,
	}
	p.pos++
	p.hasSubst = true

	// A substitution of the key being defined (or of something inside it)
	// means its earlier value, as in `path = ${path}":/bin"`.
	if abs := hoconJoinPath(p.prefix, segs); field != nil && len(abs) >= len(field) && slices.Equal(abs[:len(field)], field) {
		top := p.frames[len(p.frames)-1]
		prior, ok, err := p.lookupPrior(abs[len(top.path):], open, true)
		switch {
		case err != nil:
			return nil, err
		case ok:
			p.usedPrior = p.usedPrior || len(abs) == len(field)
			return prior, nil
		case optional:
			return hoconUndefined{}, nil
		}
		s.envOnly = true
	}
	return s, nil
}

func (p *hoconParser) parseObject(field []string) (*hoconObject, error) {
	open := p.pos
	if err := p.enter(open); err != nil {
		return nil, err
	}
	p.pos++
	obj := newHOCONObject()
	p.frames = append(p.frames, hoconFrame{obj: obj, path: field})
	err := p.parseObjectBody(true, open)
	p.frames = p.frames[:len(p.frames)-1]
	p.depth--
	return obj, err
}

func (p *hoconParser) parseList() ([]any, error) {
	open := p.pos
	if err := p.enter(open); err != nil {
		return nil, err
	}
	p.pos++
	list := []any{}
	for {
		p.skipAll()
		if p.eof() {
			return nil, p.errAt(p.pos, "expected ']' to close list opened at line %d", p.line(open))
		}
		switch p.data[p.pos] {
		case ']':
			p.pos++
			p.depth--
			return list, nil
		case ',':
			return nil, p.errAt(p.pos, "unexpected ','")
		case '}':
			return nil, p.errAt(p.pos, "unexpected '}' in list opened at line %d", p.line(open))
		}
		v, err := p.parseValue(nil)
		if err != nil {
			return nil, err
		}
		list = append(list, v)
		if !p.endItem(']') {
			return nil, p.errAt(p.pos, "expected ',' or ']' in list, found %s", p.describe())
		}
	}
}

// parseInclude handles `include "f"`, `include file("f")` and `include required(...)`.
func (p *hoconParser) parseInclude() error {
	start := p.pos
	p.pos += len("include")
	p.skipHSpace()
	required := false
	if p.hasPrefix("required(") {
		required = true
		p.pos += len("required(")
		p.skipHSpace()
	}
	quoted := func() (string, error) {
		if p.peek(0) != '"' || p.hasPrefix(`"""`) {
			return "", p.errAt(p.pos, "expected a quoted file name, found %s", p.describe())
		}
		return p.parseQuoted()
	}
	closing := func() error {
		p.skipHSpace()
		if p.peek(0) != ')' || p.eof() {
			return p.errAt(p.pos, "expected ')', found %s", p.describe())
		}
		p.pos++
		return nil
	}
	var name string
	var err error
	switch {
	case p.hasPrefix("file("):
		p.pos += len("file(")
		p.skipHSpace()
		if name, err = quoted(); err != nil {
			return err
		}
		if err = closing(); err != nil {
			return err
		}
	case p.hasPrefix("url(") || p.hasPrefix("classpath("):
		return p.errAt(p.pos, "only file includes are supported")
	default:
		if name, err = quoted(); err != nil {
			return err
		}
	}
	if required {
		if err = closing(); err != nil {
			return err
		}
	}
	return p.includeFile(name, required, start)
}

func (p *hoconParser) includeFile(name string, required bool, off int) error {
	path := name
	if !filepath.IsAbs(path) {
		path = filepath.Join(p.src.dir, path)
	}
	fi, err := os.Stat(path)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) && !required {
			return nil // HOCON: a missing include is silently ignored
		}
		return p.errAt(off, "include %q: %v", name, err)
	}
	if !fi.Mode().IsRegular() {
		return p.errAt(off, "include %q: not a regular file", name)
	}
	if fi.Size() > hoconMaxIncludeSize {
		return p.errAt(off, "include %q: file too large", name)
	}
	abs, err := filepath.Abs(path)
	if err != nil {
		return p.errAt(off, "include %q: %v", name, err)
	}
	if slices.Contains(p.includes, abs) {
		return p.errAt(off, "include %q: include cycle", name)
	}
	if len(p.includes) > hoconMaxIncludeDepth {
		return p.errAt(off, "include %q: includes nested too deeply", name)
	}
	data, err := os.ReadFile(path)
	if err != nil {
		return p.errAt(off, "include %q: %v", name, err)
	}
	savePrefix := p.prefix
	p.prefix = p.frames[len(p.frames)-1].path
	p.includes = append(p.includes, abs)
	err = p.parseSource(&hoconSource{name: path, dir: filepath.Dir(path), data: data})
	p.includes = p.includes[:len(p.includes)-1]
	p.prefix = savePrefix
	return err
}

// hoconScanPath reads a dotted path (key or substitution) at data[pos] up to a
// byte for which stop is true, a newline or the end. Quoted parts keep dots;
// whitespace inside a segment is kept, around it dropped. On failure msg is
// set and errOff locates it.
func hoconScanPath(data []byte, pos int, stop func([]byte, int) bool) (segs []string, end, errOff int, msg string) {
	var cur []byte
	has := false // the current segment has content (possibly an empty quoted string)
	var ws []byte
	lastDot := pos
	i := pos
	for i < len(data) {
		c := data[i]
		if c == '\n' || (stop != nil && stop(data, i)) {
			break
		}
		switch {
		case hoconIsHSpace(c):
			j := i
			for j < len(data) && hoconIsHSpace(data[j]) {
				j++
			}
			ws = data[i:j]
			i = j
			continue
		case c == '.':
			if !has {
				return nil, 0, i, "empty path element before '.'"
			}
			segs = append(segs, string(cur))
			cur, has, lastDot = cur[:0], false, i
			i++
		case c == '"':
			if bytes.HasPrefix(data[i:], []byte(`"""`)) {
				return nil, 0, i, `triple-quoted strings are not allowed in keys`
			}
			s, next, eoff, emsg := hoconScanQuoted(data, i)
			if emsg != "" {
				return nil, 0, eoff, emsg
			}
			if has {
				cur = append(cur, ws...)
			}
			cur, has = append(cur, s...), true
			i = next
		default:
			if has {
				cur = append(cur, ws...)
			}
			cur, has = append(cur, c), true
			i++
		}
		ws = nil
	}
	if !has {
		if len(segs) == 0 {
			return nil, 0, pos, "expected a key"
		}
		return nil, 0, lastDot, "path ends with '.'"
	}
	return append(segs, string(cur)), i, 0, ""
}

// hoconScanQuoted reads a "…" string starting at data[i]. Unknown escapes are
// kept as written (friendlier for Windows paths); raw newlines are not allowed.
func hoconScanQuoted(data []byte, i int) (s string, end, errOff int, msg string) {
	const unterminated = "unterminated quoted string"
	k := i + 1
	for k < len(data) && data[k] != '"' && data[k] != '\\' && data[k] != '\n' {
		k++
	}
	if k < len(data) && data[k] == '"' {
		return string(data[i+1 : k]), k + 1, 0, ""
	}
	b := append([]byte(nil), data[i+1:k]...)
	for k < len(data) {
		c := data[k]
		switch c {
		case '"':
			return string(b), k + 1, 0, ""
		case '\n':
			return "", 0, i, unterminated
		case '\\':
			if k+1 >= len(data) || data[k+1] == '\n' {
				return "", 0, i, unterminated
			}
			e := data[k+1]
			k += 2
			switch e {
			case '"', '\\', '/':
				b = append(b, e)
			case 'b':
				b = append(b, '\b')
			case 'f':
				b = append(b, '\f')
			case 'n':
				b = append(b, '\n')
			case 'r':
				b = append(b, '\r')
			case 't':
				b = append(b, '\t')
			case 'u':
				r, ok := hoconHex4(data, k)
				if !ok {
					return "", 0, k - 2, `invalid \u escape`
				}
				k += 4
				if utf16.IsSurrogate(r) {
					if r2, ok := hoconHex4(data, k+2); ok && data[k] == '\\' && data[k+1] == 'u' {
						if d := utf16.DecodeRune(r, r2); d != utf8.RuneError {
							r = d
							k += 6
						}
					}
				}
				b = utf8.AppendRune(b, r)
			default:
				b = append(b, '\\', e)
			}
		default:
			b = append(b, c)
			k++
		}
	}
	return "", 0, i, unterminated
}

func hoconHex4(data []byte, k int) (rune, bool) {
	if k+4 > len(data) {
		return 0, false
	}
	n, err := strconv.ParseUint(string(data[k:k+4]), 16, 32)
	return rune(n), err == nil
}

// hoconScanTriple reads a """…""" string at data[i]: raw, may span lines;
// extra quotes before the closing three belong to the content.
func hoconScanTriple(data []byte, i int) (s string, end, errOff int, msg string) {
	idx := bytes.Index(data[i+3:], []byte(`"""`))
	if idx < 0 {
		return "", 0, i, "unterminated triple-quoted string"
	}
	e := i + 3 + idx
	for e+3 < len(data) && data[e+3] == '"' {
		e++
	}
	s = string(data[i+3 : e])
	if strings.Contains(s, "\r\n") {
		s = strings.ReplaceAll(s, "\r\n", "\n")
	}
	return s, e + 3, 0, ""
}

// hoconInferScalar types a lone unquoted token.
func hoconInferScalar(s string) any {
	switch {
	case strings.EqualFold(s, "true"):
		return true
	case strings.EqualFold(s, "false"):
		return false
	case strings.EqualFold(s, "null"):
		return nil
	}
	if n, ok := hoconParseNumber(s); ok {
		return n
	}
	return s
}

// hoconParseNumber accepts [+-]?(digits | digits?.digits)([eE][+-]?digits)?.
func hoconParseNumber(s string) (any, bool) {
	digits := func(i int) int {
		for i < len(s) && s[i] >= '0' && s[i] <= '9' {
			i++
		}
		return i
	}
	i := 0
	if i < len(s) && (s[i] == '-' || s[i] == '+') {
		i++
	}
	j := digits(i)
	isFloat := false
	if j < len(s) && s[j] == '.' {
		k := digits(j + 1)
		if k == j+1 {
			return nil, false
		}
		j, isFloat = k, true
	} else if j == i {
		return nil, false
	}
	if j < len(s) && (s[j] == 'e' || s[j] == 'E') {
		k := j + 1
		if k < len(s) && (s[k] == '+' || s[k] == '-') {
			k++
		}
		e := digits(k)
		if e == k {
			return nil, false
		}
		j, isFloat = e, true
	}
	if j != len(s) {
		return nil, false
	}
	if !isFloat {
		if n, err := strconv.ParseInt(s, 10, 64); err == nil {
			return n, true
		}
	}
	f, err := strconv.ParseFloat(s, 64)
	if err != nil {
		return nil, false
	}
	return f, true
}

// hoconCombine joins the resolved pieces of a concatenation: strings join with
// the whitespace between them, lists append, objects merge. Undefined pieces
// drop out; a lone remaining piece keeps its type. budget may be nil.
func hoconCombine(pieces []any, ws []string, budget *int) (any, bool, error) {
	vals := make([]any, 0, len(pieces))
	var gaps []string
	pend := ""
	for i, pc := range pieces {
		if i > 0 {
			pend += ws[i-1]
		}
		if _, ok := pc.(hoconUndefined); ok {
			continue
		}
		if len(vals) > 0 {
			gaps = append(gaps, pend)
		}
		pend = ""
		vals = append(vals, pc)
	}
	switch len(vals) {
	case 0:
		return nil, false, nil
	case 1:
		if u, ok := vals[0].(hoconUnquoted); ok {
			return hoconInferScalar(string(u)), true, nil
		}
		return vals[0], true, nil
	}
	nObj, nList := 0, 0
	for _, v := range vals {
		switch v.(type) {
		case *hoconObject:
			nObj++
		case []any:
			nList++
		}
	}
	switch {
	case nObj == len(vals):
		acc := vals[0].(*hoconObject)
		for _, v := range vals[1:] {
			hoconMergeObjects(acc, v.(*hoconObject))
		}
		return acc, true, nil
	case nList == len(vals):
		// Pieces are never shared, so the first list can be extended in place
		// (cheap for long `+=` chains).
		out := vals[0].([]any)
		for _, v := range vals[1:] {
			if budget != nil && hoconSpend(budget, len(v.([]any))) {
				return nil, false, errors.New("substitutions expand to too much data")
			}
			out = append(out, v.([]any)...)
		}
		return out, true, nil
	case nObj > 0 && nList > 0:
		return nil, false, errors.New("cannot concatenate an object with a list")
	case nObj > 0:
		return nil, false, errors.New("cannot concatenate an object with a string")
	case nList > 0:
		return nil, false, errors.New("cannot concatenate a list with a string")
	}
	var b strings.Builder
	for i, v := range vals {
		if i > 0 {
			b.WriteString(gaps[i-1])
		}
		b.WriteString(hoconScalarString(v))
	}
	if budget != nil && hoconSpend(budget, b.Len()/32) {
		return nil, false, errors.New("substitutions expand to too much data")
	}
	return b.String(), true, nil
}

// hoconSpend takes n units from the budget and reports whether it ran out.
func hoconSpend(budget *int, n int) bool {
	*budget -= n
	return *budget < 0
}

func hoconScalarString(v any) string {
	switch t := v.(type) {
	case string:
		return t
	case hoconUnquoted:
		return string(t)
	case int64:
		return strconv.FormatInt(t, 10)
	case float64:
		// Like Python's str(float), which is what pyhocon users see: 2.0, 1e+20.
		if t == float64(int64(t)) && t > -1e16 && t < 1e16 {
			return strconv.FormatFloat(t, 'f', -1, 64) + ".0"
		}
		return strconv.FormatFloat(t, 'g', -1, 64)
	case bool:
		return strconv.FormatBool(t)
	case nil:
		return "null"
	}
	return fmt.Sprint(v)
}

// hoconResolver replaces pending nodes once the whole document is parsed.
// Object slots are tracked by identity: active ones detect cycles, done ones
// are not walked again.
type hoconResolver struct {
	p      *hoconParser
	root   *hoconObject
	active map[hoconSlot]int  // slot -> index in chain, while being resolved
	done   map[hoconSlot]bool // slots whose values are fully resolved
	chain  []*hoconPathNode   // slots being resolved, for cycle messages
	cur    *hoconSubst        // substitution being resolved, for error positions
	depth  int
}

type hoconSlot struct {
	obj *hoconObject
	key string
}

// hoconPathNode is a path as a linked list, cheap to extend while walking.
type hoconPathNode struct {
	parent *hoconPathNode
	key    string // "[i]" for list elements
}

func (n *hoconPathNode) String() string {
	var parts []string
	for ; n != nil; n = n.parent {
		parts = append(parts, n.key)
	}
	var b strings.Builder
	for i := len(parts) - 1; i >= 0; i-- {
		if b.Len() > 0 && !strings.HasPrefix(parts[i], "[") {
			b.WriteByte('.')
		}
		b.WriteString(parts[i])
	}
	return b.String()
}

// resolveObject resolves every slot of obj. Slots that turn out undefined are
// removed from obj.keys here, in one pass, rather than one by one.
func (r *hoconResolver) resolveObject(obj *hoconObject, path *hoconPathNode) error {
	for i := 0; i < len(obj.keys); i++ {
		k := obj.keys[i]
		if _, ok := obj.vals[k]; !ok {
			continue
		}
		if err := r.resolveSlot(obj, k, &hoconPathNode{path, k}); err != nil {
			return err
		}
	}
	if len(obj.keys) != len(obj.vals) {
		obj.keys = slices.DeleteFunc(obj.keys, func(k string) bool {
			_, ok := obj.vals[k]
			return !ok
		})
	}
	return nil
}

// resolveSlot fully resolves obj[k], whose path is path.
func (r *hoconResolver) resolveSlot(obj *hoconObject, k string, path *hoconPathNode) error {
	v := obj.vals[k]
	switch v.(type) {
	case *hoconObject, []any, *hoconSubst, *hoconConcat, *hoconMerge:
	default:
		return nil // a scalar: nothing to do
	}
	slot := hoconSlot{obj, k}
	if r.done[slot] {
		return nil
	}
	if i, ok := r.active[slot]; ok {
		parts := make([]string, 0, len(r.chain)-i+1)
		for _, n := range r.chain[i:] {
			parts = append(parts, n.String())
		}
		msg := "substitution cycle: " + strings.Join(append(parts, path.String()), " -> ")
		if r.cur == nil { // not expected: re-entry only happens through a substitution
			return &hoconError{File: r.p.src.name, Line: 1, Col: 1, Msg: msg}
		}
		return r.cur.src.errAt(r.cur.off, "%s", msg)
	}
	r.active[slot] = len(r.chain)
	r.chain = append(r.chain, path)
	defer func() {
		delete(r.active, slot)
		r.chain = r.chain[:len(r.chain)-1]
	}()

	rv, def, err := r.resolve(v, path)
	if err != nil {
		return err
	}
	if !def {
		delete(obj.vals, k) // resolveObject drops it from obj.keys
	} else {
		// Store before walking the children, so that they can refer to
		// their siblings through this slot. A substitution's value is a copy
		// of a resolved one and needs no walk.
		obj.vals[k] = rv
		if o, ok := rv.(*hoconObject); ok && o != nil && !hoconIsSubst(v) {
			if err := r.resolveObject(o, path); err != nil {
				return err
			}
		}
	}
	r.done[slot] = true
	return nil
}

func hoconIsSubst(v any) bool {
	_, ok := v.(*hoconSubst)
	return ok
}

// resolve replaces the pending node v by its value. Lists are resolved
// through; objects in the result may still hold pending children, which the
// caller walks.
func (r *hoconResolver) resolve(v any, path *hoconPathNode) (any, bool, error) {
	switch t := v.(type) {
	case []any:
		n := 0
		for i, e := range t {
			rv, def, err := r.resolveDeep(e, &hoconPathNode{path, "[" + strconv.Itoa(i) + "]"})
			if err != nil {
				return nil, false, err
			}
			if def {
				t[n] = rv
				n++
			}
		}
		clear(t[n:])
		return t[:n], true, nil
	case *hoconSubst:
		return r.resolveSubst(t)
	case *hoconConcat:
		pieces := make([]any, len(t.pieces))
		for i, pc := range t.pieces {
			rv, def, err := r.resolve(pc, path)
			if err != nil {
				return nil, false, err
			}
			if !def {
				rv = hoconUndefined{}
			}
			pieces[i] = rv
		}
		out, def, err := hoconCombine(pieces, t.ws, &r.p.budget)
		if err != nil {
			return nil, false, t.src.errAt(t.off, "%v", err)
		}
		return out, def, nil
	case *hoconMerge:
		var acc any
		has := false
		for _, e := range t.vals {
			rv, def, err := r.resolve(e, path)
			if err != nil {
				return nil, false, err
			}
			if !def {
				continue
			}
			if ao, ok := acc.(*hoconObject); ok && has {
				if ro, ok := rv.(*hoconObject); ok {
					hoconMergeObjects(ao, ro)
					continue
				}
			}
			acc, has = rv, true
		}
		return acc, has, nil
	case hoconUndefined:
		return nil, false, nil
	}
	return v, true, nil
}

// resolveDeep is resolve plus a walk of a resulting object's children.
func (r *hoconResolver) resolveDeep(v any, path *hoconPathNode) (any, bool, error) {
	rv, def, err := r.resolve(v, path)
	if err != nil || !def {
		return rv, def, err
	}
	if obj, ok := rv.(*hoconObject); ok && obj != nil && !hoconIsSubst(v) {
		if err := r.resolveObject(obj, path); err != nil {
			return nil, false, err
		}
	}
	return rv, true, nil
}

func (r *hoconResolver) resolveSubst(s *hoconSubst) (any, bool, error) {
	if r.depth++; r.depth > hoconMaxSubstDepth {
		return nil, false, s.src.errAt(s.off, "substitutions nested too deeply")
	}
	saveCur := r.cur
	r.cur = s
	defer func() { r.depth--; r.cur = saveCur }()
	if !s.envOnly {
		paths := [][]string{s.path}
		if len(s.prefix) > 0 {
			paths = [][]string{hoconJoinPath(s.prefix, s.path), s.path}
		}
		for _, path := range paths {
			v, ok, err := r.lookup(path)
			if err != nil {
				return nil, false, err
			}
			if ok {
				c := hoconCloneValue(v, &r.p.budget)
				if r.p.budget < 0 {
					return nil, false, s.src.errAt(s.off, "substitutions expand to too much data")
				}
				return c, true, nil
			}
		}
	}
	if v, ok := r.p.env(strings.Join(s.path, ".")); ok {
		return v, true, nil
	}
	if s.optional {
		return nil, false, nil
	}
	return nil, false, s.src.errAt(s.off, "could not resolve substitution ${%s}", s.text)
}

// lookup finds path in the document, resolving what it passes through.
// Objects on the way are not walked, so a key may refer to a sibling.
func (r *hoconResolver) lookup(path []string) (any, bool, error) {
	cur := r.root
	var node *hoconPathNode
	for i, seg := range path {
		v, ok := cur.vals[seg]
		if !ok {
			return nil, false, nil
		}
		node = &hoconPathNode{node, seg}
		last := i == len(path)-1
		if last || hoconIsPending(v) {
			if err := r.resolveSlot(cur, seg, node); err != nil {
				return nil, false, err
			}
			if v, ok = cur.vals[seg]; !ok {
				return nil, false, nil
			}
		}
		if last {
			return v, true, nil
		}
		obj, ok := v.(*hoconObject)
		if !ok || obj == nil {
			return nil, false, nil
		}
		cur = obj
	}
	return nil, false, nil
}
