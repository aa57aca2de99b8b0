package main

// A YAML writer for JSON data that prints what the reference's PyYAML
// safe_dump(default_flow_style=False, allow_unicode=True) prints: sorted
// keys, 2-space indents, indentless lists under keys, and quotes only where
// a plain scalar would read back as something else.

import (
	"encoding/json"
	"regexp"
	"sort"
	"strings"
	"sync"
	"unicode"
)

const yamlWidth = 80

type yamlWriter struct {
	b   strings.Builder
	col int
}

func (w *yamlWriter) write(s string) {
	w.b.WriteString(s)
	if i := strings.LastIndexByte(s, '\n'); i >= 0 {
		w.col = len([]rune(s[i+1:]))
	} else {
		w.col += len([]rune(s))
	}
}

func (w *yamlWriter) newline(indent int) {
	w.write("\n" + strings.Repeat(" ", indent))
}

// dumpYAML renders v (decoded with json.Decoder.UseNumber) as YAML.
func dumpYAML(v any) string {
	w := &yamlWriter{}
	switch x := v.(type) {
	case map[string]any:
		if len(x) == 0 {
			w.write("{}")
		} else {
			w.mapping(x, 0)
		}
	case []any:
		if len(x) == 0 {
			w.write("[]")
		} else {
			w.sequence(x, 0)
		}
	default:
		w.scalar(v, 0)
		w.write("\n...")
	}
	w.write("\n")
	return w.b.String()
}

// mapping writes keys at the current column; indent is their column.
func (w *yamlWriter) mapping(m map[string]any, indent int) {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for i, k := range keys {
		if i > 0 {
			w.newline(indent)
		}
		w.scalar(k, indent)
		w.write(":")
		w.value(m[k], indent, true)
	}
}

// sequence writes "- item" lines at column indent.
func (w *yamlWriter) sequence(l []any, indent int) {
	for i, item := range l {
		if i > 0 {
			w.newline(indent)
		}
		w.write("-")
		w.value(item, indent, false)
	}
}

// value writes what follows "key:" or "-".
func (w *yamlWriter) value(v any, indent int, inMapping bool) {
	switch x := v.(type) {
	case map[string]any:
		if len(x) == 0 {
			w.write(" {}")
			return
		}
		if inMapping {
			w.newline(indent + 2)
		} else {
			w.write(" ")
		}
		w.mapping(x, indent+2)
	case []any:
		if len(x) == 0 {
			w.write(" []")
			return
		}
		if inMapping {
			// PyYAML does not indent a list that is a mapping's value.
			w.newline(indent)
			w.sequence(x, indent)
		} else {
			w.write(" ")
			w.sequence(x, indent+2)
		}
	default:
		w.write(" ")
		w.scalar(v, indent+2)
	}
}

func (w *yamlWriter) scalar(v any, indent int) {
	switch x := v.(type) {
	case nil:
		w.write("null")
	case bool:
		if x {
			w.write("true")
		} else {
			w.write("false")
		}
	case json.Number:
		s := x.String()
		if strings.ContainsAny(s, ".eE") {
			if f, err := x.Float64(); err == nil {
				s = pyFloat(f)
			}
		}
		w.write(yamlFloat(s))
	case float64:
		w.write(yamlFloat(pyFloat(x)))
	case int64:
		w.write(scalarText(x))
	case string:
		w.str(x, indent)
	default:
		w.str(scalarText(x), indent)
	}
}

// yamlFloat adds the ".0" PyYAML puts into exponent forms: 1e+20 -> 1.0e+20.
func yamlFloat(s string) string {
	if i := strings.IndexAny(s, "eE"); i >= 0 && !strings.Contains(s, ".") {
		return s[:i] + ".0" + s[i:]
	}
	return s
}

var yamlImplicit = sync.OnceValue(func() []*regexp.Regexp {
	return []*regexp.Regexp{
		regexp.MustCompile(`^(?:yes|Yes|YES|no|No|NO|true|True|TRUE|false|False|FALSE|on|On|ON|off|Off|OFF)$`),
		regexp.MustCompile(`^(?:~|null|Null|NULL)$`),
		regexp.MustCompile(`^(?:[-+]?0b[0-1_]+|[-+]?0[0-7_]+|[-+]?(?:0|[1-9][0-9_]*)|[-+]?0x[0-9a-fA-F_]+|[-+]?[1-9][0-9_]*(?::[0-5]?[0-9])+)$`),
		regexp.MustCompile(`^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+][0-9]+)?|\.[0-9_]+(?:[eE][-+][0-9]+)?|[-+]?[0-9][0-9_]*(?::[0-5]?[0-9])+\.[0-9_]*|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))$`),
		regexp.MustCompile(`^(?:[0-9]{4}-[0-9]{2}-[0-9]{2}|[0-9]{4}-[0-9]{1,2}-[0-9]{1,2}(?:[Tt]|[ \t]+)[0-9]{1,2}:[0-9]{2}:[0-9]{2}(?:\.[0-9]*)?(?:[ \t]*(?:Z|[-+][0-9]{1,2}(?::[0-9]{2})?))?)$`),
		regexp.MustCompile(`^(?:<<|=)$`),
	}
})

// yamlStyle says how a string must be written: plain, single or double quoted.
func yamlStyle(s string) byte {
	if s == "" {
		return '\''
	}
	for _, r := range s {
		if r == '\n' || r == '\t' || (!unicode.IsPrint(r) && r != ' ') || r == '\uFEFF' {
			return '"'
		}
	}
	for _, re := range yamlImplicit() {
		if re.MatchString(s) {
			return '\''
		}
	}
	if s[0] == ' ' || s[len(s)-1] == ' ' || strings.HasPrefix(s, "---") || strings.HasPrefix(s, "...") {
		return '\''
	}
	if strings.ContainsRune("#,[]{}&*!|>'\"%@`", rune(s[0])) {
		return '\''
	}
	if (s[0] == '-' || s[0] == '?' || s[0] == ':') && (len(s) == 1 || s[1] == ' ') {
		return '\''
	}
	if strings.Contains(s, ": ") || strings.Contains(s, " #") || strings.HasSuffix(s, ":") {
		return '\''
	}
	return 0
}

// str writes a string, folding long plain or single-quoted text at spaces
// past column 80, as PyYAML does.
func (w *yamlWriter) str(s string, indent int) {
	style := yamlStyle(s)
	if style == '"' {
		b, _ := json.Marshal(s)
		w.write(string(b))
		return
	}
	if style == '\'' {
		w.write("'")
		s = strings.ReplaceAll(s, "'", "''")
	}
	words := strings.Split(s, " ")
	for i, word := range words {
		if i > 0 {
			single := word != "" && words[i-1] != ""
			if single && w.col > yamlWidth {
				w.newline(indent)
			} else {
				w.write(" ")
			}
		}
		w.write(word)
	}
	if style == '\'' {
		w.write("'")
	}
}
