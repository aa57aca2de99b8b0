package main

import (
	"fmt"
	"strconv"
	"strings"
	"unicode/utf8"
)

// SLURM batch templates, the interface of ClearML's SLURM glue: the template
// is a batch script in which ${NAME} and ${NAME:default} are replaced, where
// NAME is CLEARML_TASK.<field path> (id, name, project,
// hyperparams.<section>.<name>.value, container.image, container.arguments,
// or any other field of the task document) or one of the glue's variables
// (CLEARML_QUEUE_NAME, CLEARML_QUEUE_ID, CLEARML_WORKER_ID, CLEARML_PRE_SETUP,
// CLEARML_AGENT_EXECUTE, CLEARML_POST_SETUP). The default runs to the first
// "}" and is used when the task has no such value.
//
// Only ${CLEARML_...} is template syntax: ${HOME}, $CLEARML_X (no braces) and
// \${CLEARML_X} (escaped) are left for the shell. An unknown ${CLEARML_...}
// without a default is an error naming the variable and the line.
//
// Quoting. A value comes from whoever can edit a task, so it is data, never
// code. The renderer follows the shell's quoting through the script and
// writes each value so that it stays literal where it lands:
//   - unquoted shell (also inside $(...)): one single-quoted word, ' written
//     as '\'' (container.arguments: one such word per argument);
//   - inside "...": the text with \ " $ ` escaped by a backslash;
//   - inside '...': the text with ' written as '\'';
//   - in a comment, which includes #SBATCH lines: sbatch parses its directives
//     with quotes, backslashes and # of its own and takes several options on
//     one line, and a newline would end the comment and start a command, so
//     every character outside [A-Za-z0-9._+:/=,@[]-] becomes "_", and a value
//     that starts a word does not start with "-" (no extra options);
//   - everywhere: NUL bytes are dropped and invalid UTF-8 is replaced.
//
// CLEARML_PRE_SETUP, CLEARML_AGENT_EXECUTE and CLEARML_POST_SETUP are shell
// code written by the glue and go in as they are, only where a command can go.
// A variable is refused (an error, not a guess) where a quoted word could
// still run code or where the quoting cannot be followed: inside $((...)),
// ((...)), $[...], ${...} of the shell, `...`, $'...', a here-document, an
// array subscript, the arguments of eval or let, a [[ ]] test with -eq and
// friends, right after a $ ($${...} would read as $'...'), and after a case
// statement or a quote inside ${...} that the scanner does not follow. The fix is to assign
// the value to a shell variable first (N=${CLEARML_TASK.name}) and use "$N".
// What a command does with the literal word it gets (bash -c, source,
// declare -i, printf -v, test -v) is up to the template.

// slurmValue is what a template variable stands for.
type slurmValue struct {
	Text   string   // the value
	Words  []string // several words (container arguments), when Multi
	Multi  bool
	Script bool // shell code written by the glue, inserted as it is
}

// slurmLookup resolves a variable name (without ${ }); false: unknown.
type slurmLookup func(name string) (slurmValue, bool)

// slurmTemplateError is a template that cannot be rendered for this task.
type slurmTemplateError struct {
	Line int
	Var  string // the variable, when the error is about one
	Msg  string
}

func (e *slurmTemplateError) Error() string {
	return fmt.Sprintf("slurm template line %d: %s", e.Line, e.Msg)
}

// Frame kinds of the shell-quoting scanner.
const (
	frameCode    = iota // unquoted: the top level, $(...)
	frameDouble         // "..."
	frameSingle         // '...'
	frameAnsi           // $'...'
	frameParam          // ${...} of the shell
	frameArith          // $((...)), ((...)), $[...]
	frameBack           // `...`
	frameComment        // # ... to the end of the line
)

type slurmFrame struct {
	kind    int
	sub     bool   // frameCode: inside $(...), ends at its ")"
	bracket bool   // frameArith: $[...]
	depth   int    // nesting of ( or { or [ inside the frame
	atCmd   bool   // frameCode: the next word is a command word
	cmd     string // frameCode: the current command's first word
	cond    int    // frameCode: offset of an open [[, else -1
}

type slurmHeredoc struct {
	delim string
	strip bool // <<-: leading tabs do not count
}

type slurmScanner struct {
	src      string
	i        int
	line     int
	out      strings.Builder
	stack    []*slurmFrame
	heredocs []slurmHeredoc
	word     int    // offset where the current unquoted word starts
	lost     string // why the quoting is no longer known; "" while it is
	lookup   slurmLookup
}

// renderSlurmTemplate fills a batch template for one task.
func renderSlurmTemplate(tmpl string, lookup slurmLookup) (string, error) {
	s := &slurmScanner{src: tmpl, line: 1, lookup: lookup}
	s.push(frameCode)
	for s.i < len(s.src) {
		var err error
		if strings.HasPrefix(s.src[s.i:], "${CLEARML_") {
			err = s.variable()
		} else {
			err = s.step()
		}
		if err != nil {
			return "", err
		}
	}
	return s.out.String(), nil
}

func (s *slurmScanner) push(kind int) *slurmFrame {
	f := &slurmFrame{kind: kind, atCmd: true, cond: -1}
	s.stack = append(s.stack, f)
	return f
}

func (s *slurmScanner) pop() {
	if len(s.stack) > 1 {
		s.stack = s.stack[:len(s.stack)-1]
	}
}

func (s *slurmScanner) top() *slurmFrame { return s.stack[len(s.stack)-1] }

// take copies n bytes of the template to the output.
func (s *slurmScanner) take(n int) {
	n = min(n, len(s.src)-s.i)
	chunk := s.src[s.i : s.i+n]
	if k := strings.Count(chunk, "\n"); k > 0 {
		s.line += k
		if len(s.heredocs) > 0 && s.top().kind != frameCode && s.lost == "" {
			s.lost = fmt.Sprintf("a here-document started in a quoted line (line %d)", s.line-k)
		}
	}
	s.out.WriteString(chunk)
	s.i += n
}

func (s *slurmScanner) errorf(name, format string, args ...any) error {
	return &slurmTemplateError{Line: s.line, Var: name, Msg: fmt.Sprintf(format, args...)}
}

// wordStart: the byte at i begins a shell word.
func (s *slurmScanner) wordStart() bool {
	return s.i == 0 || strings.IndexByte(" \t\n;&|()<>", s.src[s.i-1]) >= 0
}

// step consumes at least one byte in the current frame.
func (s *slurmScanner) step() error {
	f := s.top()
	c, rest := s.src[s.i], s.src[s.i:]
	switch f.kind {
	case frameCode:
		return s.code(f)
	case frameComment:
		switch {
		case c == '\n':
			s.pop() // the newline is code again
		case c == '\\' && len(rest) > 1 && rest[1] != '\n':
			s.take(2) // sbatch honours the escape; the shell does not care
		default:
			s.take(1)
		}
	case frameSingle, frameAnsi:
		switch {
		case c == '\\' && f.kind == frameAnsi:
			s.take(2)
		case c == '\'':
			s.pop()
			s.take(1)
		default:
			s.take(1)
		}
	case frameBack:
		switch c {
		case '\\':
			s.take(2)
		case '`':
			s.pop()
			s.take(1)
		default:
			s.take(1)
		}
	default:
		s.nested(f)
	}
	return nil
}

// opens pushes a frame for a construct that starts at the cursor in a
// context where expansions happen; false: none starts here.
func (s *slurmScanner) opens() bool {
	rest := s.src[s.i:]
	switch {
	case strings.HasPrefix(rest, "$(("):
		s.push(frameArith)
		s.take(3)
	case strings.HasPrefix(rest, "$("):
		s.push(frameCode).sub = true
		s.take(2)
	case strings.HasPrefix(rest, "$["):
		s.push(frameArith).bracket = true
		s.take(2)
	case strings.HasPrefix(rest, "${"):
		s.push(frameParam)
		s.take(2)
	case rest[0] == '`':
		s.push(frameBack)
		s.take(1)
	default:
		return false
	}
	return true
}

// nested handles "...", ${...} and arithmetic frames.
func (s *slurmScanner) nested(f *slurmFrame) {
	c, rest := s.src[s.i], s.src[s.i:]
	if c == '\\' {
		s.take(2)
		return
	}
	if s.opens() {
		return
	}
	switch {
	case f.kind == frameDouble && c == '"':
		s.pop()
	case f.kind == frameDouble:
	case c == '"' || c == '\'':
		// Whether a quote quotes inside ${...} or $((...)) depends on the
		// operator and the enclosing quotes; rather than guess, stop
		// substituting from here on.
		if s.lost == "" {
			s.lost = fmt.Sprintf("a quote inside a shell ${...} or arithmetic expansion (line %d)", s.line)
		}
	case f.kind == frameParam && c == '{':
		f.depth++
	case f.kind == frameParam && c == '}':
		if f.depth == 0 {
			s.pop()
		} else {
			f.depth--
		}
	case f.kind == frameArith && f.bracket && c == '[':
		f.depth++
	case f.kind == frameArith && f.bracket && c == ']':
		if f.depth == 0 {
			s.pop()
		} else {
			f.depth--
		}
	case f.kind == frameArith && !f.bracket && c == '(':
		f.depth++
	case f.kind == frameArith && !f.bracket && c == ')':
		if f.depth == 0 && strings.HasPrefix(rest, "))") {
			s.pop()
			s.take(2)
			return
		}
		f.depth = max(f.depth-1, 0)
	}
	s.take(1)
}

// code handles unquoted shell text.
func (s *slurmScanner) code(f *slurmFrame) error {
	c, rest := s.src[s.i], s.src[s.i:]
	if s.wordStart() && strings.IndexByte(" \t\n", c) < 0 {
		s.word = s.i
		if c == '#' {
			s.push(frameComment)
			s.take(1)
			return nil
		}
		s.commandWord(f)
	}
	switch {
	case c == '\\':
		s.take(2)
	case c == '\n':
		s.take(1)
		f.atCmd, f.cmd = true, ""
		return s.heredocBodies()
	case c == '\'':
		s.push(frameSingle)
		s.take(1)
	case c == '"':
		s.push(frameDouble)
		s.take(1)
	case strings.HasPrefix(rest, "$'"):
		s.push(frameAnsi)
		s.take(2)
	case s.opens():
	case strings.HasPrefix(rest, "(("):
		s.push(frameArith)
		s.take(2)
	case strings.HasPrefix(rest, "<<<"):
		s.take(3)
	case strings.HasPrefix(rest, "<<"):
		return s.heredocStart()
	case c == '(' && f.sub:
		f.depth++
		f.atCmd, f.cmd = true, ""
		s.take(1)
	case c == ')' && f.sub && f.depth == 0:
		s.pop()
		s.take(1)
	case strings.IndexByte(";&|(){}", c) >= 0:
		if c == ')' && f.sub {
			f.depth--
		}
		f.atCmd, f.cmd = true, ""
		s.take(1)
	default:
		s.take(1)
	}
	return nil
}

var slurmKeywords = map[string]bool{"if": true, "then": true, "else": true, "elif": true, "fi": true,
	"do": true, "done": true, "while": true, "until": true, "for": true, "in": true, "case": true,
	"esac": true, "!": true, "time": true, "{": true, "}": true, "function": true, "select": true}

var slurmAssignment = lazyRegexp(`^[A-Za-z_][A-Za-z0-9_]*(\[[^]]*\])?\+?=`)

var slurmArithTest = lazyRegexp(`\s-(eq|ne|lt|le|gt|ge)\s`)

// commandWord keeps track of each simple command's first word and of [[ ]].
func (s *slurmScanner) commandWord(f *slurmFrame) {
	end := s.i
	for end < len(s.src) && strings.IndexByte(" \t\n;&|()<>", s.src[end]) < 0 {
		end++
	}
	w := s.src[s.i:end]
	switch w {
	case "[[":
		f.cond = s.i
	case "]]":
		f.cond = -1
	case "case":
		if f.sub && f.atCmd && s.lost == "" {
			s.lost = fmt.Sprintf("a case statement inside $(...) (line %d)", s.line)
		}
	}
	if !f.atCmd || slurmKeywords[w] || slurmAssignment().MatchString(w) {
		return
	}
	f.atCmd, f.cmd = false, w
}

// heredocStart reads "<<[-]WORD" and queues the body for the next newline.
func (s *slurmScanner) heredocStart() error {
	s.take(2)
	h := slurmHeredoc{}
	if s.i < len(s.src) && s.src[s.i] == '-' {
		h.strip = true
		s.take(1)
	}
	for s.i < len(s.src) && (s.src[s.i] == ' ' || s.src[s.i] == '\t') {
		s.take(1)
	}
	end := s.i
	for end < len(s.src) && strings.IndexByte(" \t\n;&|()<>", s.src[end]) < 0 {
		end++
	}
	word := s.src[s.i:end]
	if strings.Contains(word, "${CLEARML_") {
		return s.errorf("", "a template variable cannot be a here-document delimiter (%s)", word)
	}
	h.delim = strings.NewReplacer(`"`, "", "'", "", `\`, "").Replace(word)
	if h.delim == "" && s.lost == "" {
		s.lost = fmt.Sprintf("a here-document without a delimiter word (line %d)", s.line)
	}
	s.heredocs = append(s.heredocs, h)
	s.take(end - s.i)
	return nil
}

// heredocBodies copies the pending here-documents, which start after a
// newline; a variable in one is refused.
func (s *slurmScanner) heredocBodies() error {
	for _, h := range s.heredocs {
		for s.i < len(s.src) {
			line, _, _ := strings.Cut(s.src[s.i:], "\n")
			check := line
			if h.strip {
				check = strings.TrimLeft(line, "\t")
			}
			if strings.Contains(line, "${CLEARML_") {
				name := s.src[s.i+strings.Index(line, "${CLEARML_"):]
				name, _, _ = strings.Cut(name[2:], "}")
				return s.errorf(name, "${%s} is inside a here-document (it would be read as text or as code, unquoted); assign it to a shell variable before the here-document (N=${%s}) and use $N in it", name, name)
			}
			s.take(len(line) + 1)
			if check == h.delim {
				break
			}
		}
	}
	s.heredocs = s.heredocs[:0]
	return nil
}

// variable replaces one ${CLEARML_...} at the cursor.
func (s *slurmScanner) variable() error {
	rest := s.src[s.i:]
	end := strings.IndexAny(rest, "}\n")
	if end < 0 || rest[end] != '}' {
		shown, _, _ := strings.Cut(rest, "\n")
		if len(shown) > 40 {
			shown = shown[:40] + "..."
		}
		return s.errorf("", "unterminated variable %q: close it with }", shown)
	}
	name, def, hasDef := strings.Cut(rest[2:end], ":")
	if !slurmVarName().MatchString(name) {
		return s.errorf(name, "bad variable name ${%s}: use CLEARML_TASK.<field> or a CLEARML_ name from the docs", name)
	}
	if why := s.refused(); why != "" {
		return s.errorf(name, "${%s} is %s, where a quoted value could still run as code or its quoting cannot be followed; assign it to a shell variable first (N=${%s}) and use \"$N\"", name, why, name)
	}
	v, ok := s.lookup(name)
	if !ok && !hasDef {
		return s.errorf(name, "unknown variable ${%s} and no default: the task has no such value (give one: ${%s:default}; a shell variable is written $%s)", name, name, name)
	}
	if !ok {
		v = slurmValue{Text: def}
	}
	text, err := s.emit(name, v)
	if err != nil {
		return err
	}
	s.out.WriteString(text)
	s.i += end + 1
	return nil
}

var slurmVarName = lazyRegexp(`^CLEARML_[A-Z0-9_]+(\.[^{}$\n]+)?$`)

// refused says why a variable may not be substituted here, or "".
func (s *slurmScanner) refused() string {
	if s.lost != "" {
		return "after " + s.lost
	}
	for _, f := range s.stack {
		switch f.kind {
		case frameArith:
			return "inside an arithmetic expression"
		case frameParam:
			return "inside a shell ${...} expansion"
		case frameBack:
			return "inside `...` (use $(...))"
		case frameAnsi:
			return "inside $'...'"
		case frameCode:
			if f.cmd == "eval" || f.cmd == "let" {
				return "an argument of " + f.cmd
			}
			if f.cond >= 0 {
				cond, _, _ := strings.Cut(s.src[f.cond:], "]]")
				if slurmArithTest().MatchString(cond) {
					return "in a [[ ]] test with an arithmetic comparison"
				}
			}
		}
	}
	if slurmSubscript().MatchString(s.src[s.word:s.i]) {
		return "inside an array subscript"
	}
	// $'...' would read the quoted value with backslash escapes, and "$x"
	// would expand a variable named by the value.
	if k := s.top().kind; s.i > 0 && s.src[s.i-1] == '$' && (k == frameCode || k == frameDouble) {
		return "right after a $"
	}
	return ""
}

var slurmSubscript = lazyRegexp(`^[A-Za-z_][A-Za-z0-9_]*\[[^]]*$`)

// emit writes a value for the context at the cursor.
func (s *slurmScanner) emit(name string, v slurmValue) (string, error) {
	kind := s.top().kind
	if v.Script {
		if kind != frameCode {
			return "", s.errorf(name, "${%s} is shell code: put it where a command goes, outside quotes and comments", name)
		}
		return v.Text, nil
	}
	words := []string{v.Text}
	if v.Multi {
		words = v.Words
	}
	for i, w := range words {
		words[i] = strings.ToValidUTF8(strings.ReplaceAll(w, "\x00", ""), "\uFFFD")
	}
	switch kind {
	case frameCode:
		for i, w := range words {
			words[i] = "'" + strings.ReplaceAll(w, "'", `'\''`) + "'"
		}
		return strings.Join(words, " "), nil
	case frameDouble:
		return slurmDoubleQuoter.Replace(strings.Join(words, " ")), nil
	case frameSingle:
		return strings.ReplaceAll(strings.Join(words, " "), "'", `'\''`), nil
	default: // frameComment
		return slurmDirectiveSafe(strings.Join(words, " "), s.i > 0 && (s.src[s.i-1] == ' ' || s.src[s.i-1] == '\t')), nil
	}
}

var slurmDoubleQuoter = strings.NewReplacer(`\`, `\\`, `"`, `\"`, "$", `\$`, "`", "\\`")

// slurmDirectiveSafe reduces a value for a comment or #SBATCH line.
func slurmDirectiveSafe(v string, wordStart bool) string {
	var b strings.Builder
	for _, r := range v {
		if r < utf8.RuneSelf && (r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' ||
			strings.ContainsRune("._+:/=,@[]-", r)) {
			b.WriteRune(r)
		} else {
			b.WriteByte('_')
		}
	}
	out := b.String()
	if wordStart && strings.HasPrefix(out, "-") {
		out = "_" + out[1:]
	}
	return out
}

// slurmTaskLookup resolves CLEARML_TASK.<path> in a task document (as
// tasks.get_by_id returns it) and the glue's own variables from vars.
func slurmTaskLookup(task map[string]any, vars map[string]slurmValue) slurmLookup {
	return func(name string) (slurmValue, bool) {
		if v, ok := vars[name]; ok {
			return v, true
		}
		path, ok := strings.CutPrefix(name, "CLEARML_TASK.")
		if !ok {
			return slurmValue{}, false
		}
		v, ok := slurmDig(task, strings.Split(path, "."))
		if !ok {
			return slurmValue{}, false
		}
		if path == "container.arguments" {
			if s, isString := v.(string); isString {
				return slurmValue{Multi: true, Words: shellSplitLoose(s)}, true
			}
		}
		return slurmScalar(v)
	}
}

// slurmDig follows a dotted path; a key may itself hold dots (a
// hyperparameter "lr.decay"), so the longest matching key wins.
func slurmDig(v any, parts []string) (any, bool) {
	if len(parts) == 0 {
		return v, v != nil
	}
	m, ok := v.(map[string]any)
	if !ok {
		return nil, false
	}
	for n := len(parts); n > 0; n-- {
		if next, ok := m[strings.Join(parts[:n], ".")]; ok {
			if got, ok := slurmDig(next, parts[n:]); ok {
				return got, true
			}
		}
	}
	return nil, false
}

// slurmScalar turns a JSON value into a template value.
func slurmScalar(v any) (slurmValue, bool) {
	switch x := v.(type) {
	case string:
		return slurmValue{Text: x}, true
	case bool:
		return slurmValue{Text: strconv.FormatBool(x)}, true
	case float64:
		return slurmValue{Text: strconv.FormatFloat(x, 'f', -1, 64)}, true
	case []any:
		var words []string
		for _, e := range x {
			s, ok := slurmScalar(e)
			if !ok || s.Multi {
				return slurmValue{}, false
			}
			words = append(words, s.Text)
		}
		return slurmValue{Multi: true, Words: words}, true
	}
	return slurmValue{}, false
}
