package main

import (
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

// hoconPlain converts parsed values to plain maps and slices for comparison.
func hoconPlain(v any) any {
	switch t := v.(type) {
	case *hoconObject:
		m := make(map[string]any, len(t.keys))
		for _, k := range t.Keys() {
			e, _ := t.Get(k)
			m[k] = hoconPlain(e)
		}
		return m
	case []any:
		out := make([]any, len(t))
		for i, e := range t {
			out[i] = hoconPlain(e)
		}
		return out
	}
	return v
}

type hoconCase struct {
	name string
	src  string
	want map[string]any
}

func hoconRunCases(t *testing.T, cases []hoconCase) {
	t.Helper()
	env := mapEnv(map[string]string{"HOME": "/home/test", "PATH": "/bin", "EMPTY": ""})
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			obj, err := parseHOCON("test.conf", []byte(tc.src), env)
			if err != nil {
				t.Fatalf("parse error: %v\nsource:\n%s", err, tc.src)
			}
			if got := hoconPlain(obj); !reflect.DeepEqual(got, tc.want) {
				t.Errorf("source:\n%s\ngot:  %#v\nwant: %#v", tc.src, got, tc.want)
			}
		})
	}
}

type hoconM = map[string]any
type hoconL = []any

func TestParseHOCONComments(t *testing.T) {
	hoconRunCases(t, []hoconCase{
		{"hash", "# c\na = 1 # trailing\n", hoconM{"a": int64(1)}},
		{"slashes", "// c\na = 1 // trailing\n", hoconM{"a": int64(1)}},
		{"url keeps //", "a = http://x:8008 // c", hoconM{"a": "http://x:8008"}},
		{"url without comment", "a = https://host:8008/p//q", hoconM{"a": "https://host:8008/p//q"}},
		{"hash ends unquoted", "a = foo#bar", hoconM{"a": "foo"}},
		{"hash in quotes", `a = "x#y//z"`, hoconM{"a": "x#y//z"}},
		{"comment only", "# nothing\n// here\n", hoconM{}},
		{"empty", "", hoconM{}},
		{"comment after open brace", "a { # c\n b = 1 # d\n} # e", hoconM{"a": hoconM{"b": int64(1)}}},
		{"comment after separator-less object", "a {\n}\n", hoconM{"a": hoconM{}}},
	})
}

func TestParseHOCONObjects(t *testing.T) {
	hoconRunCases(t, []hoconCase{
		{"separators", "a: 1\nb = 2\nc { d = 3 }\ne: { f = 4 }\ng = { h = 5 }",
			hoconM{"a": int64(1), "b": int64(2), "c": hoconM{"d": int64(3)}, "e": hoconM{"f": int64(4)}, "g": hoconM{"h": int64(5)}}},
		{"braced root", "{ a = 1, b = 2 }", hoconM{"a": int64(1), "b": int64(2)}},
		{"commas and newlines", "a { x = 1, y = 2,\n z = 3\n w = 4, }", hoconM{"a": hoconM{"x": int64(1), "y": int64(2), "z": int64(3), "w": int64(4)}}},
		{"dotted key", `agent.git_user="x"`, hoconM{"agent": hoconM{"git_user": "x"}}},
		{"dotted object key", "google.storage { project = p }", hoconM{"google": hoconM{"storage": hoconM{"project": "p"}}}},
		{"quoted key", `"match_rules": [1]`, hoconM{"match_rules": hoconL{int64(1)}}},
		{"quoted key with dot", `"a.b" = 1`, hoconM{"a.b": int64(1)}},
		{"mixed quoted path", `a."b.c".d = 1`, hoconM{"a": hoconM{"b.c": hoconM{"d": int64(1)}}}},
		{"key with spaces", "foo bar = 1", hoconM{"foo bar": int64(1)}},
		{"json inline", `credentials {"access_key": "AK", "secret_key": "x!y#z$&*()"}`,
			hoconM{"credentials": hoconM{"access_key": "AK", "secret_key": "x!y#z$&*()"}}},
		{"deep merge", "a { b { c = 1, d = 2 } }\na { b { d = 3, e = 4 } }\na.b.f = 5",
			hoconM{"a": hoconM{"b": hoconM{"c": int64(1), "d": int64(3), "e": int64(4), "f": int64(5)}}}},
		{"later value wins", "a = 1\na = 2", hoconM{"a": int64(2)}},
		{"object replaces scalar", "a = 1\na { b = 2 }", hoconM{"a": hoconM{"b": int64(2)}}},
		{"scalar replaces object", "a { b = 2 }\na = 1", hoconM{"a": int64(1)}},
		{"dotted key through scalar", "a = 1\na.b = 2", hoconM{"a": hoconM{"b": int64(2)}}},
		{"comma on next line", "a = 1\n, b = 2\n# c\n,c = 3", hoconM{"a": int64(1), "b": int64(2), "c": int64(3)}},
		{"include as key", "include = 5\nincludes = 6", hoconM{"include": int64(5), "includes": int64(6)}},
		{"empty quoted key", `"" = 1`, hoconM{"": int64(1)}},
	})
}

func TestParseHOCONStrings(t *testing.T) {
	hoconRunCases(t, []hoconCase{
		{"url", "api_server: https://host:8008", hoconM{"api_server": "https://host:8008"}},
		{"path", "venvs_dir = ~/.clearml/venvs-builds", hoconM{"venvs_dir": "~/.clearml/venvs-builds"}},
		{"size", "size = 10GB", hoconM{"size": "10GB"}},
		{"version", "v = 1.2.3", hoconM{"v": "1.2.3"}},
		{"multi word", "a = foo bar", hoconM{"a": "foo bar"}},
		{"inner whitespace kept", "a = foo  \tbar   ", hoconM{"a": "foo  \tbar"}},
		{"escapes", `a = "q\" b\\ s\/ \b\f\n\r\t \u00e9 \ud83d\ude00"`, hoconM{"a": "q\" b\\ s/ \b\f\n\r\t é 😀"}},
		{"unknown escape kept", `a = "C:\Users\x"`, hoconM{"a": `C:\Users\x`}},
		{"empty quoted", `a = ""`, hoconM{"a": ""}},
		{"secret", `s = "x!XTov_G-#vspE*Y(h$Anm&DIc5Ou-F)jsl$PdOyj5wG1&E!Z8"`, hoconM{"s": "x!XTov_G-#vspE*Y(h$Anm&DIc5Ou-F)jsl$PdOyj5wG1&E!Z8"}},
		{"quoted concat", `a = "x" "y"`, hoconM{"a": "x y"}},
		{"quoted concat wide", `a = "x"   "y"`, hoconM{"a": "x   y"}},
		{"unquoted and quoted", `a = pre"mid"post`, hoconM{"a": "premidpost"}},
		{"triple", "a = \"\"\"line1\n  \"quoted\" \\n\nline3\"\"\"", hoconM{"a": "line1\n  \"quoted\" \\n\nline3"}},
		{"triple extra quotes", `a = """x""""`, hoconM{"a": `x"`}},
		{"triple concat", `a = """x""" y`, hoconM{"a": "x y"}},
		{"dollar without brace", "a = $HOME/x", hoconM{"a": "$HOME/x"}},
		{"lenient punctuation", "a = --ipc=host", hoconM{"a": "--ipc=host"}},
		{"quoted true", `a = "true"`, hoconM{"a": "true"}},
	})
}

func TestParseHOCONScalars(t *testing.T) {
	hoconRunCases(t, []hoconCase{
		{"bools", "a = true\nb = True\nc = FALSE\nd = false", hoconM{"a": true, "b": true, "c": false, "d": false}},
		{"yes stays string", "a = yes\nb = no\nc = on", hoconM{"a": "yes", "b": "no", "c": "on"}},
		{"null", "a = null\nb = NULL\nc = None", hoconM{"a": nil, "b": nil, "c": "None"}},
		{"ints", "a = 0\nb = 42\nc = -7\nd = 007\ne = 9223372036854775807", hoconM{"a": int64(0), "b": int64(42), "c": int64(-7), "d": int64(7), "e": int64(9223372036854775807)}},
		{"int overflow becomes float", "a = 99999999999999999999", hoconM{"a": 1e20}},
		{"floats", "a = 1.0\nb = 72.0\nc = -3.5\nd = 1e3\ne = .5\nf = 2.5E-2", hoconM{"a": 1.0, "b": 72.0, "c": -3.5, "d": 1000.0, "e": 0.5, "f": 0.025}},
		{"not numbers", "a = 1.2.3\nb = 10GB\nc = 1.\nd = 1e\ne = -\nf = 0x10", hoconM{"a": "1.2.3", "b": "10GB", "c": "1.", "d": "1e", "e": "-", "f": "0x10"}},
		{"numbers concatenated", "a = 1 2\nb = 1.0 x\nc = true false", hoconM{"a": "1 2", "b": "1.0 x", "c": "true false"}},
		{"number then comment", "a = 5 # five\nb = 2.0, c = 3", hoconM{"a": int64(5), "b": 2.0, "c": int64(3)}},
	})
}

func TestParseHOCONLists(t *testing.T) {
	hoconRunCases(t, []hoconCase{
		{"empty", "a = []", hoconM{"a": hoconL{}}},
		{"trailing comma", `a = ["x", "y", ]`, hoconM{"a": hoconL{"x", "y"}}},
		{"multi line", "a = [\n  1,\n  2,\n]\n", hoconM{"a": hoconL{int64(1), int64(2)}}},
		{"newline separated", "a = [\n one\n two three\n]", hoconM{"a": hoconL{"one", "two three"}}},
		{"comments inside", "a = [ # c\n 1 # d\n // e\n, 2 ]", hoconM{"a": hoconL{int64(1), int64(2)}}},
		{"nested", "a = [[1], [], [[2]]]", hoconM{"a": hoconL{hoconL{int64(1)}, hoconL{}, hoconL{hoconL{int64(2)}}}}},
		{"objects", "a = [{x = 1}\n{ y = 2 },\n{\n z = 3\n}]", hoconM{"a": hoconL{hoconM{"x": int64(1)}, hoconM{"y": int64(2)}, hoconM{"z": int64(3)}}}},
		{"mixed types", `a = [1, 2.5, "s", true, null, u]`, hoconM{"a": hoconL{int64(1), 2.5, "s", true, nil, "u"}}},
		{"list concat", "a = [1] [2]", hoconM{"a": hoconL{int64(1), int64(2)}}},
		{"list replaced", "a = [1]\na = [2]", hoconM{"a": hoconL{int64(2)}}},
		{"comment-only list", "a = [\n # {x = 1}\n]", hoconM{"a": hoconL{}}},
	})
}

func TestParseHOCONSubstitutions(t *testing.T) {
	hoconRunCases(t, []hoconCase{
		{"simple", "a = 1\nb = ${a}", hoconM{"a": int64(1), "b": int64(1)}},
		{"forward", "b = ${a.x}\na { x = hi }", hoconM{"b": "hi", "a": hoconM{"x": "hi"}}},
		{"chain", "a = ${b}\nb = ${c}\nc = 3", hoconM{"a": int64(3), "b": int64(3), "c": int64(3)}},
		{"object copy", "a { x = 1 }\nb = ${a}", hoconM{"a": hoconM{"x": int64(1)}, "b": hoconM{"x": int64(1)}}},
		{"list copy", "a = [1, 2]\nb = ${a}", hoconM{"a": hoconL{int64(1), int64(2)}, "b": hoconL{int64(1), int64(2)}}},
		{"sees final value", "a = 1\nb = ${a}\na = 2", hoconM{"a": int64(2), "b": int64(2)}},
		{"env fallback", "h = ${HOME}", hoconM{"h": "/home/test"}},
		{"env empty value", "e = ${EMPTY}", hoconM{"e": ""}},
		{"doc wins over env", "HOME = mine\nh = ${HOME}", hoconM{"HOME": "mine", "h": "mine"}},
		{"optional env missing", "a = ${?NOPE}\nb = 1", hoconM{"b": int64(1)}},
		{"optional env present", "a = ${?HOME}", hoconM{"a": "/home/test"}},
		{"optional keeps earlier", "a = 1\na = ${?NOPE}", hoconM{"a": int64(1)}},
		{"optional in list", "a = [1, ${?NOPE}, 2]", hoconM{"a": hoconL{int64(1), int64(2)}}},
		{"optional in concat", "a = foo${?NOPE}bar", hoconM{"a": "foobar"}},
		{"sibling", "a { b = 1, c = ${a.b} }", hoconM{"a": hoconM{"b": int64(1), "c": int64(1)}}},
		{"inside list", "x = 1\na = [${x}, {y = ${x}}]", hoconM{"x": int64(1), "a": hoconL{int64(1), hoconM{"y": int64(1)}}}},
		{"quoted path", `"a.b" = 1` + "\nc = ${\"a.b\"}", hoconM{"a.b": int64(1), "c": int64(1)}},
		{"whitespace in braces", "a = 1\nb = ${ a }", hoconM{"a": int64(1), "b": int64(1)}},
		{"self reference", "path = /usr/bin\npath = ${path}\":/opt/bin\"", hoconM{"path": "/usr/bin:/opt/bin"}},
		{"self reference env", "PATH = ${PATH}\":/opt/bin\"", hoconM{"PATH": "/bin:/opt/bin"}},
		{"self reference list", "a = [1]\na = ${a} [2]", hoconM{"a": hoconL{int64(1), int64(2)}}},
		{"self reference nested", "a { b = x }\na { b = ${a.b}y }", hoconM{"a": hoconM{"b": "xy"}}},
		{"self reference object", "a { x = 1 }\na = ${a} { y = 2 }", hoconM{"a": hoconM{"x": int64(1), "y": int64(2)}}},
		{"self reference twice", "a = [1]\na = ${a} ${a}", hoconM{"a": hoconL{int64(1), int64(1)}}},
		{"self optional missing", "a = ${?a} [1]", hoconM{"a": hoconL{int64(1)}}},
		{"merge onto substitution", "base { x = 1, y = 2 }\nc = ${base}\nc { y = 3 }\nc.z = 4",
			hoconM{"base": hoconM{"x": int64(1), "y": int64(2)}, "c": hoconM{"x": int64(1), "y": int64(3), "z": int64(4)}}},
		{"object concat with substitution", "base { x = 1 }\nc = ${base} { y = 2 }",
			hoconM{"base": hoconM{"x": int64(1)}, "c": hoconM{"x": int64(1), "y": int64(2)}}},
		{"number in string", "n = 2.0\ni = 3\nb = true\ns = v${n}-${i}-${b}", hoconM{"n": 2.0, "i": int64(3), "b": true, "s": "v2.0-3-true"}},
		{"substitution keeps bool", "a = True\nb = ${a}", hoconM{"a": true, "b": true}},
		{"null substitution", "a = null\nb = ${a}", hoconM{"a": nil, "b": nil}},
		{"optional undefined with spacing", "a = ${?NOPE} 42", hoconM{"a": int64(42)}},
		{"through substituted object", "a = ${b}\nb { c { d = 1 } }\ne = ${a.c.d}",
			hoconM{"a": hoconM{"c": hoconM{"d": int64(1)}}, "b": hoconM{"c": hoconM{"d": int64(1)}}, "e": int64(1)}},
	})
}

func TestParseHOCONConcatenation(t *testing.T) {
	hoconRunCases(t, []hoconCase{
		{"path suffix", "a = /opt\nb = ${a}/b", hoconM{"a": "/opt", "b": "/opt/b"}},
		{"prefix", "x = 1\nb = foo-${x}", hoconM{"x": int64(1), "b": "foo-1"}},
		{"whitespace preserved", "x = a\ny = ${x}  and   ${x}", hoconM{"x": "a", "y": "a  and   a"}},
		{"quoted pieces", "host = h\nurl = \"http://\"${host}\":8008\"", hoconM{"host": "h", "url": "http://h:8008"}},
		{"objects merge", "a = {x = 1} {y = 2} {x = 3}", hoconM{"a": hoconM{"x": int64(3), "y": int64(2)}}},
		{"lists append", "a = [1]\nb = ${a} [2] ${a}", hoconM{"a": hoconL{int64(1)}, "b": hoconL{int64(1), int64(2), int64(1)}}},
		{"concat in list", "a = [foo bar, \"x\" \"y\"]", hoconM{"a": hoconL{"foo bar", "x y"}}},
	})
}

func TestParseHOCONAppend(t *testing.T) {
	hoconRunCases(t, []hoconCase{
		{"new key", "a += 1", hoconM{"a": hoconL{int64(1)}}},
		{"existing", "a = [1]\na += 2\na += [3]", hoconM{"a": hoconL{int64(1), int64(2), hoconL{int64(3)}}}},
		{"dotted", "x.a = [1]\nx.a += 2", hoconM{"x": hoconM{"a": hoconL{int64(1), int64(2)}}}},
		{"in object", "x { a = [1] }\nx { a += 2 }", hoconM{"x": hoconM{"a": hoconL{int64(1), int64(2)}}}},
		{"onto substitution", "b = [0]\na = ${b}\na += 1\na += 2", hoconM{"b": hoconL{int64(0)}, "a": hoconL{int64(0), int64(1), int64(2)}}},
		{"onto undefined", "a = ${?nope}\na += 1\na += 2", hoconM{"a": hoconL{int64(1), int64(2)}}},
		{"substitution element", "x = 5\na += ${x}\na += ${?nope}", hoconM{"x": int64(5), "a": hoconL{int64(5)}}},
	})
}

func TestParseHOCONBOMAndCRLF(t *testing.T) {
	hoconRunCases(t, []hoconCase{
		{"bom", "\xef\xbb\xbfa = 1", hoconM{"a": int64(1)}},
		{"crlf", "a = 1\r\nb {\r\n  c = foo bar \r\n  d = [1,\r\n 2]\r\n}\r\n# c\r\n", hoconM{"a": int64(1), "b": hoconM{"c": "foo bar", "d": hoconL{int64(1), int64(2)}}}},
		{"crlf triple", "a = \"\"\"x\r\ny\"\"\"\r\n", hoconM{"a": "x\ny"}},
		{"crlf comment", "a = 1 // c\r\nb = 2 # d\r\n", hoconM{"a": int64(1), "b": int64(2)}},
	})
}

func TestParseHOCONErrors(t *testing.T) {
	tmp := t.TempDir()
	bad := filepath.Join(tmp, "bad.conf")
	if err := os.WriteFile(bad, []byte("x = 1\ny = [\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name, src, want string
	}{
		{"unterminated string", "a = 1\nb = \"abc\n", "test.conf:2:5: unterminated quoted string"},
		{"unterminated string at eof", `a = "abc`, "test.conf:1:5: unterminated quoted string"},
		{"unterminated triple", "a = \"\"\"abc", "test.conf:1:5: unterminated triple-quoted string"},
		{"missing brace", "a {\n  b = 1\n", "test.conf:3:1: expected '}' to close object opened at line 1"},
		{"missing nested brace", "x = 1\na {\n  b {\n    c = 1\n  }\n", "test.conf:6:1: expected '}' to close object opened at line 2"},
		{"missing bracket", "a = [1,\n2", "test.conf:2:2: expected ']' to close list opened at line 1"},
		{"stray close", "a = 1\n}", "test.conf:2:1: unexpected '}'"},
		{"bad subst unterminated", "a = ${b\n", "test.conf:1:5: unterminated substitution: expected '}' to close '${'"},
		{"bad subst empty", "a = x ${}", "test.conf:1:7: bad substitution: empty substitution path"},
		{"bad subst dots", "a = ${b..c}", "test.conf:1:9: bad substitution: empty path element before '.'"},
		{"unresolved", "a = 1\nb {\n  c = ${nope.x}\n}", "test.conf:3:7: could not resolve substitution ${nope.x}"},
		{"unresolved in concat", "b = foo${nope}", "test.conf:1:8: could not resolve substitution ${nope}"},
		{"cycle", "a = ${b}\nb = ${a}", "test.conf:2:5: substitution cycle: a -> b -> a"},
		{"self cycle through object", "a { b = ${a} }", "test.conf:1:9: substitution cycle: a -> a.b -> a"},
		{"cycle in list", "a = [${a}]", "test.conf:1:6: substitution cycle: a -> a"},
		{"cycle through list object", "a = [{b = ${a}}]", "test.conf:1:11: substitution cycle: a -> a[0].b -> a"},
		{"cycle via optional", "a = ${?b}\nb = ${?a}", "test.conf:2:5: substitution cycle: a -> b -> a"},
		{"missing separator", "a b\nc = 1", "test.conf:1:4: expected ':', '=' or '{' after key \"a b\", found end of line"},
		{"missing value", "a = \nb = 1", "test.conf:1:5: expected a value for key \"a\", found end of line"},
		{"missing value comment", "a = # c", "test.conf:1:5: expected a value for key \"a\", found '#'"},
		{"double comma", "a = [1,,2]", "test.conf:1:8: unexpected ','"},
		{"double comma over lines", "a = [1,\n,2]", "test.conf:2:1: unexpected ','"},
		{"double comma in object", "a = 1,\n, b = 2", "test.conf:2:1: unexpected ','"},
		{"key ends with dot", "a. = 1", "test.conf:1:2: path ends with '.'"},
		{"junk after value", "a = {x = 1} b", "test.conf:1:5: cannot concatenate an object with a string"},
		{"list and string", "a = [1] x", "test.conf:1:5: cannot concatenate a list with a string"},
		{"append to scalar", "a = 1\na += 2", "test.conf:2:1: cannot append with += to \"a\": it is not a list"},
		{"root list", "[1, 2]", "test.conf:1:1: the document root must be an object, not a list"},
		{"after root", "{ a = 1 }\nb = 2", "test.conf:2:1: unexpected 'b' after the closing '}' of the document"},
		{"too deep", "a = " + strings.Repeat("[", 300), "test.conf:1:261: nesting too deep (more than 256 levels)"},
		{"bad unicode escape", `a = "\u12"`, `test.conf:1:6: invalid \u escape`},
		{"required include", `include required("missing.conf")`, "test.conf:1:1: include \"missing.conf\": "},
		{"url include", `include url("http://x/y.conf")`, "test.conf:1:9: only file includes are supported"},
		{"error in include", "a = 1\ninclude \"" + bad + "\"", bad + ":3:1: expected ']' to close list opened at line 2"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := parseHOCON("test.conf", []byte(tc.src), mapEnv(nil))
			if err == nil {
				t.Fatalf("no error for:\n%s", tc.src)
			}
			var he *hoconError
			if !errors.As(err, &he) {
				t.Fatalf("error %v is %T, want *hoconError", err, err)
			}
			if !strings.HasPrefix(err.Error(), tc.want) {
				t.Errorf("error:\n got %q\nwant %q", err.Error(), tc.want)
			}
		})
	}
}

// TestHOCONRejectsBinary: NUL bytes and bytes that are not UTF-8 are an
// error at their line and column, in the file that has them, instead of
// values quietly read with garbage in them.
func TestHOCONRejectsBinary(t *testing.T) {
	tmp := t.TempDir()
	inc := filepath.Join(tmp, "inc.conf")
	if err := os.WriteFile(inc, []byte("x = 1\ny = \"caf\xe9\"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct{ name, src, want string }{
		{"NUL", "a = 1\nb = x\x00y\n", "test.conf:2:6: the file contains a NUL byte"},
		{"latin-1", "a = 1\n# caf\xe9\nb = 2", "test.conf:2:6: the file is not UTF-8 text (byte 0xe9)"},
		{"UTF-16 with BOM", "\xff\xfea\x00 \x00=\x00 \x001\x00", "test.conf:1:1: the file is not UTF-8 text (byte 0xff)"},
		{"UTF-16 without BOM", "a\x00=\x001\x00", "test.conf:1:2: the file contains a NUL byte"},
		{"cut rune", "a = \"\xc3\"", "test.conf:1:6: the file is not UTF-8 text (byte 0xc3)"},
		{"after a UTF-8 BOM", "\xef\xbb\xbfa = \xff", "test.conf:1:5: the file is not UTF-8 text"},
		{"in an include", "a = 1\ninclude \"" + inc + "\"", inc + ":2:9: the file is not UTF-8 text (byte 0xe9)"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := parseHOCON("test.conf", []byte(tc.src), mapEnv(nil))
			var he *hoconError
			if !errors.As(err, &he) || !strings.HasPrefix(err.Error(), tc.want) {
				t.Errorf("error:\n got %v\nwant %q", err, tc.want)
			}
		})
	}
	// Valid UTF-8 stays valid, U+FFFD included.
	obj, err := parseHOCON("test.conf", []byte("a = \"caf\u00e9 \ufffd\""), mapEnv(nil))
	if err != nil {
		t.Fatal(err)
	}
	if v, _ := obj.Get("a"); v != "caf\u00e9 \ufffd" {
		t.Errorf("a = %q", v)
	}
	// The agent names the file it could not use.
	home := t.TempDir()
	conf := filepath.Join(home, "clearml.conf")
	if err := os.WriteFile(conf, []byte("api {\n  api_server: \"http://h\x00\"\n}\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	_, err = loadConfig("", mapEnv(map[string]string{"HOME": home}))
	if err == nil || !strings.Contains(err.Error(), conf+":2:24: the file contains a NUL byte") {
		t.Errorf("loadConfig: %v", err)
	}
}

func TestParseHOCONErrorFields(t *testing.T) {
	_, err := parseHOCON("clearml.conf", []byte("api {\n  x = 1\n\n"), nil)
	var he *hoconError
	if !errors.As(err, &he) {
		t.Fatalf("got %v, want *hoconError", err)
	}
	want := hoconError{File: "clearml.conf", Line: 4, Col: 1, Msg: "expected '}' to close object opened at line 1"}
	if *he != want {
		t.Errorf("got %+v, want %+v", *he, want)
	}
	if he.Error() != "clearml.conf:4:1: expected '}' to close object opened at line 1" {
		t.Errorf("Error() = %q", he.Error())
	}
}

func TestHOCONKeyOrder(t *testing.T) {
	src := "b = 1\na = 2\nc { z = 1, y = 2 }\nb = 3\nc.x = 4\nc { y = 5, w = 6 }\n\"0\" = 0"
	obj, err := parseHOCON("order.conf", []byte(src), nil)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := obj.Keys(), []string{"b", "a", "c", "0"}; !reflect.DeepEqual(got, want) {
		t.Errorf("root keys %v, want %v", got, want)
	}
	c, _ := obj.Get("c")
	if got, want := c.(*hoconObject).Keys(), []string{"z", "y", "x", "w"}; !reflect.DeepEqual(got, want) {
		t.Errorf("c keys %v, want %v", got, want)
	}
}

func TestHOCONKeyOrderWithSubstitutions(t *testing.T) {
	src := "x = ${?nope}\ny = 1\nw { p = ${?nope}, q = 2, r = ${?nope} }\nz = ${y}\nv = ${?HOME}"
	obj, err := parseHOCON("order.conf", []byte(src), mapEnv(nil))
	if err != nil {
		t.Fatal(err)
	}
	if got, want := obj.Keys(), []string{"y", "w", "z"}; !reflect.DeepEqual(got, want) {
		t.Errorf("root keys %v, want %v", got, want)
	}
	w, _ := obj.Get("w")
	if got, want := w.(*hoconObject).Keys(), []string{"q"}; !reflect.DeepEqual(got, want) {
		t.Errorf("w keys %v, want %v", got, want)
	}
}

func TestHOCONObjectAPI(t *testing.T) {
	o := newHOCONObject()
	o.Set("b", int64(1))
	o.Set("a", "x")
	o.Set("b", int64(2))
	if got := o.Keys(); !reflect.DeepEqual(got, []string{"b", "a"}) {
		t.Errorf("keys %v", got)
	}
	if v, ok := o.Get("b"); !ok || v != int64(2) {
		t.Errorf("Get(b) = %v, %v", v, ok)
	}
	o.Delete("b")
	o.Delete("missing")
	if _, ok := o.Get("b"); ok || !reflect.DeepEqual(o.Keys(), []string{"a"}) {
		t.Errorf("after Delete: keys %v", o.Keys())
	}

	o.SetPath(int64(1), "x", "y", "z")
	if v, ok := o.Lookup("x", "y", "z"); !ok || v != int64(1) {
		t.Errorf("Lookup(x.y.z) = %v, %v", v, ok)
	}
	if _, ok := o.Lookup("x", "nope"); ok {
		t.Error("Lookup of a missing key succeeded")
	}
	if _, ok := o.Lookup("a", "deeper"); ok {
		t.Error("Lookup through a string succeeded")
	}
	if v, ok := o.Lookup(); !ok || v != o {
		t.Error("Lookup() should return the object itself")
	}
	// Object over object merges; a scalar on the way is replaced.
	add := newHOCONObject()
	add.Set("w", true)
	o.SetPath(add, "x", "y")
	o.SetPath("v", "a", "b")
	want := hoconM{"a": hoconM{"b": "v"}, "x": hoconM{"y": hoconM{"z": int64(1), "w": true}}}
	if got := hoconPlain(o); !reflect.DeepEqual(got, want) {
		t.Errorf("after SetPath: %#v", got)
	}

	// Merge: other wins, deep, new keys appended, and no aliasing.
	other, err := parseHOCON("o.conf", []byte("x.y.z = 2\nx.q = [1]\nn = new"), nil)
	if err != nil {
		t.Fatal(err)
	}
	o.Merge(other)
	want = hoconM{"a": hoconM{"b": "v"}, "x": hoconM{"y": hoconM{"z": int64(2), "w": true}, "q": hoconL{int64(1)}}, "n": "new"}
	if got := hoconPlain(o); !reflect.DeepEqual(got, want) {
		t.Errorf("after Merge: %#v", got)
	}
	if got := o.Keys(); !reflect.DeepEqual(got, []string{"a", "x", "n"}) {
		t.Errorf("keys after Merge %v", got)
	}
	other.SetPath(int64(9), "x", "y", "z")
	if v, _ := o.Lookup("x", "y", "z"); v != int64(2) {
		t.Error("Merge kept a reference into other")
	}

	c := o.Clone()
	if !reflect.DeepEqual(hoconPlain(c), hoconPlain(o)) {
		t.Error("Clone differs")
	}
	c.SetPath("changed", "x", "y", "z")
	if v, _ := o.Lookup("x", "y", "z"); v != int64(2) {
		t.Error("Clone shares nested objects")
	}

	var nilObj *hoconObject
	if _, ok := nilObj.Get("a"); ok || nilObj.Keys() != nil || nilObj.Clone() != nil {
		t.Error("nil object should read as empty")
	}
}

func TestHOCONSubstitutionCopies(t *testing.T) {
	obj, err := parseHOCON("c.conf", []byte("a { x = [1] }\nb = ${a}"), nil)
	if err != nil {
		t.Fatal(err)
	}
	obj.SetPath(int64(5), "b", "x")
	if v, _ := obj.Lookup("a", "x"); !reflect.DeepEqual(v, hoconL{int64(1)}) {
		t.Errorf("a.x changed to %v: substitution did not copy", v)
	}
}

func TestSplitHOCONPath(t *testing.T) {
	cases := []struct {
		in   string
		want []string
		err  bool
	}{
		{"a", []string{"a"}, false},
		{"a.b.c", []string{"a", "b", "c"}, false},
		{`a.b."c.d"`, []string{"a", "b", "c.d"}, false},
		{`"a"."b"`, []string{"a", "b"}, false},
		{`x"y.z"w.v`, []string{"xy.zw", "v"}, false},
		{" a . b ", []string{"a", "b"}, false},
		{`""`, []string{""}, false},
		{"", nil, true},
		{"a..b", nil, true},
		{"a.", nil, true},
		{".a", nil, true},
		{`"a`, nil, true},
		{"a\nb", nil, true},
	}
	for _, tc := range cases {
		got, err := splitHOCONPath(tc.in)
		if (err != nil) != tc.err || !reflect.DeepEqual(got, tc.want) {
			t.Errorf("splitHOCONPath(%q) = %q, %v; want %q, error %v", tc.in, got, err, tc.want, tc.err)
		}
	}
}

func TestParseHOCONInclude(t *testing.T) {
	dir := t.TempDir()
	write := func(name, content string) string {
		p := filepath.Join(dir, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	write("common.conf", "shared = 1\nobj { a = 1 }\nref = ${?shared}")
	write("conf.d/extra.conf", "extra = yes\nobj { b = 2 }")
	write("loop.conf", "include \"loop.conf\"")
	main := write("main.conf", `include "common.conf"
include file("conf.d/extra.conf")
include required(file("common.conf"))
include "missing.conf"
include file("missing-too.conf")
obj { c = 3 }
inner {
    include "common.conf"
    shared = 2
}
`)
	obj, err := parseHOCONFile(main, nil)
	if err != nil {
		t.Fatal(err)
	}
	want := hoconM{
		"shared": int64(1), "ref": int64(1), "extra": "yes",
		"obj":   hoconM{"a": int64(1), "b": int64(2), "c": int64(3)},
		"inner": hoconM{"shared": int64(2), "obj": hoconM{"a": int64(1)}, "ref": int64(2)},
	}
	if got := hoconPlain(obj); !reflect.DeepEqual(got, want) {
		t.Errorf("got %#v\nwant %#v", got, want)
	}

	_, err = parseHOCONFile(write("cyc.conf", "include \"loop.conf\""), nil)
	if err == nil || !strings.Contains(err.Error(), "include cycle") {
		t.Errorf("include cycle: got %v", err)
	}
	_, err = parseHOCON(filepath.Join(dir, "dir.conf"), []byte(`include "conf.d"`), nil)
	if err == nil || !strings.Contains(err.Error(), "not a regular file") {
		t.Errorf("directory include: got %v", err)
	}
	if _, err := parseHOCONFile(filepath.Join(dir, "nope.conf"), nil); err == nil {
		t.Error("parseHOCONFile of a missing file succeeded")
	}
}

func TestParseHOCONFixtures(t *testing.T) {
	env := mapEnv(map[string]string{"HOME": "/home/test", "USER_NAME": "alice"})
	cases := []struct {
		file string
		want map[string]any
	}{
		{"basic.conf", hoconM{
			"api": hoconM{
				"api_server":         "http://localhost:8008",
				"web_server":         "http://localhost:8080",
				"credentials":        hoconM{"access_key": "AK123", "secret_key": "s3cr!t#$&*()"},
				"verify_certificate": true,
			},
			"agent": hoconM{
				"worker_id": "worker-1",
				"venvs_dir": "~/.clearml/venvs-builds",
				"package_manager": hoconM{
					"type": "pip", "force_upgrade": false,
					"extra_index_url": hoconL{"https://pypi.example.com/simple"},
				},
				"venvs_cache": hoconM{"max_entries": int64(10), "free_space_threshold_gb": 2.0, "path": "~/.clearml/venvs-cache"},
				"git_user":    "me",
			},
			"sdk":        hoconM{"google": hoconM{"storage": hoconM{"project": "clearml"}}, "azure": hoconM{"storage": hoconM{}}},
			"quoted.key": int64(1),
			"a":          hoconM{"b.c": hoconM{"d": int64(2)}},
		}},
		{"lists.conf", hoconM{
			"empty":    hoconL{},
			"inline":   hoconL{int64(1), int64(2), int64(3)},
			"multi":    hoconL{"pytorch", "conda-forge", "defaults"},
			"newlines": hoconL{"one", "two"},
			"nested":   hoconL{hoconL{int64(1), int64(2)}, hoconL{}, hoconL{"x"}},
			"objects":  hoconL{hoconM{"host": "api.openai.com", "port": int64(443)}, hoconM{"host": "claude.ai", "port": int64(443)}},
			"agent": hoconM{
				"default_docker": hoconM{"match_rules": hoconL{hoconM{
					"image": "python:3.10-bullseye",
					"match": hoconM{"script": hoconM{"binary": "python3.10$"}},
				}}},
				"sanitize_config_printout": hoconM{
					"hide_secrets":           hoconL{"^sanitize_config_printout$", "secret", "pass", "token", "account_key", "contents"},
					"hide_secrets_recursive": hoconL{"^environment$"},
					"dont_hide_secrets":      hoconL{"^enable_git_ask_pass$"},
					"docker_commands":        hoconL{"docker"},
					"urls":                   hoconL{"^extra_index_url$"},
				},
			},
		}},
		{"strings.conf", hoconM{
			"url":             "https://files.example.com:8081/path?x=1",
			"path":            "~/.clearml/venvs-builds",
			"size":            "10GB",
			"version":         "1.2.3",
			"words":           "foo bar   baz",
			"escapes":         "tab\there \"q\" back\\slash é nl\nend",
			"secret":          "x!XTov_G-#vspE*Y(h$Anm&DIc5Ou-F)jsl",
			"concat":          "x y",
			"mixed":           "prequotedpost",
			"script":          "#!/bin/bash\necho \"hi\" \\n\n",
			"yes_is_string":   "yes",
			"bools":           hoconL{true, true, false, false},
			"nothing":         nil,
			"int":             int64(42),
			"negative":        int64(-7),
			"float":           72.0,
			"exp":             1000.0,
			"numbers_as_text": "1 2",
		}},
		{"subst.conf", hoconM{
			"base_dir":      "/opt/clearml",
			"cache_dir":     "/opt/clearml/cache",
			"forward":       int64(5),
			"later":         hoconM{"value": int64(5)},
			"docker":        hoconM{"image": "python", "tag": "3.10", "full": "python:3.10"},
			"copy":          hoconM{"image": "python", "tag": "3.10", "full": "python:3.10"},
			"copy_list":     hoconL{"a", "b", "c"},
			"flags":         hoconL{"a", "b", "c"},
			"home":          "/home/test",
			"kept":          int64(1),
			"with_optional": hoconL{int64(1), int64(2)},
			"greeting":      "hello-alice",
			"user":          "alice",
			"path":          "/usr/bin:/extra/bin",
			"new_list":      hoconL{"x"},
		}},
		{"include_main.conf", hoconM{
			"name":     "child",
			"greeting": "hello child",
			"shared":   hoconM{"from_child": int64(1), "from_nested": int64(2)},
			"leaf":     "from sub/leaf.conf",
			"main":     true,
			"nested":   hoconM{"name": "override", "greeting": "hello override", "shared": hoconM{"from_child": int64(1)}},
		}},
	}
	for _, tc := range cases {
		t.Run(tc.file, func(t *testing.T) {
			obj, err := parseHOCONFile(filepath.Join("testdata", "hocon", tc.file), env)
			if err != nil {
				t.Fatal(err)
			}
			if got := hoconPlain(obj); !reflect.DeepEqual(got, tc.want) {
				t.Errorf("got  %#v\nwant %#v", got, tc.want)
			}
		})
	}
}

// hoconSamplePath is the reference agent's full sample configuration.
var hoconSamplePath = filepath.Join("..", "shared", "fixtures", "clearml.conf")

func hoconReadSample(tb testing.TB) []byte {
	tb.Helper()
	data, err := os.ReadFile(hoconSamplePath)
	if errors.Is(err, os.ErrNotExist) {
		tb.Skipf("reference sample %s is not present; skipping", hoconSamplePath)
	}
	if err != nil {
		tb.Fatal(err)
	}
	return data
}

func TestParseHOCONReferenceSample(t *testing.T) {
	data := hoconReadSample(t)
	obj, err := parseHOCON(hoconSamplePath, data, mapEnv(nil))
	if err != nil {
		t.Fatal(err)
	}
	if got := obj.Keys(); !reflect.DeepEqual(got, []string{"api", "agent", "sdk"}) {
		t.Errorf("top-level keys %v", got)
	}
	want := []struct {
		path string
		val  any
	}{
		{"api.api_server", "https://demoapi.demo.clear.ml"},
		{"api.web_server", "https://demoapp.demo.clear.ml"},
		{"api.files_server", "https://demofiles.demo.clear.ml"},
		{"api.credentials.access_key", "EGRTCO8JMSIGI6S39GTP43NFWXDQOW"},
		{"api.credentials.secret_key", "x!XTov_G-#vspE*Y(h$Anm&DIc5Ou-F)jsl$PdOyj5wG1&E!Z8"},
		{"api.verify_certificate", true},
		{"agent.worker_id", ""},
		{"agent.worker_name", ""},
		{"agent.force_git_ssh_protocol", false},
		{"agent.git_fetch_args", hoconL{"--all", "--tags", "--recurse-submodules"}},
		{"agent.python_binary", ""},
		{"agent.bootstrap.use_bootstrap", true},
		{"agent.bootstrap.check_for_latest_timeout", int64(5)},
		{"agent.bootstrap.host_bootstrap_dir", "~/.clearml.bootstrap"},
		{"agent.bootstrap.host_bootstrap_cache_dir", "~/.clearml.bootstrap.cache"},
		{"agent.package_manager.type", "pip"},
		{"agent.package_manager.system_site_packages", false},
		{"agent.package_manager.extra_index_url", hoconL{}},
		{"agent.package_manager.conda_channels", hoconL{"pytorch", "conda-forge", "nvidia", "defaults"}},
		{"agent.package_manager.torch_nightly", false},
		{"agent.venvs_dir", "~/.clearml/venvs-builds"},
		{"agent.venvs_cache.max_entries", int64(10)},
		{"agent.venvs_cache.free_space_threshold_gb", 2.0},
		{"agent.venvs_cache.path", "~/.clearml/venvs-cache"},
		{"agent.vcs_cache", hoconM{"enabled": true, "path": "~/.clearml/vcs-cache"}},
		{"agent.pip_download_cache.path", "~/.clearml/pip-download-cache"},
		{"agent.translate_ssh", true},
		{"agent.reload_config", false},
		{"agent.docker_pip_cache", "~/.clearml/pip-cache"},
		{"agent.docker_apt_cache", "~/.clearml/apt-cache"},
		{"agent.forbidden_docker_args", hoconL{"entrypoint"}},
		{"agent.docker_force_pull", false},
		{"agent.default_docker", hoconM{"image": "nvidia/cuda:12.6.3-cudnn-runtime-ubuntu20.04"}},
		{"agent.enable_task_env", false},
		{"agent.hide_docker_command_env_vars", hoconM{"enabled": true, "extra_keys": hoconL{}, "parse_embedded_urls": true}},
		{"agent.snug.enabled", false},
		{"agent.snug.app_mode", ""},
		{"agent.snug.whitelist.version", int64(1)},
		{"agent.snug.whitelist.default_action", "meter"},
		{"agent.snug.call_history_cap_bytes", int64(262144)},
		{"agent.snug.aggregator_url", nil},
		{"sdk.storage.cache.default_base_dir", "~/.clearml/cache"},
		{"sdk.storage.direct_access", hoconL{hoconM{"url": "file://*"}}},
		{"sdk.metrics.images", hoconM{"format": "JPEG", "quality": int64(87), "subsampling": int64(0)}},
		{"sdk.metrics.tensorboard_single_series_per_graph", false},
		{"sdk.network.iteration.max_retries_on_server_error", int64(5)},
		{"sdk.aws.s3.key", ""},
		{"sdk.aws.s3.use_credentials_chain", false},
		{"sdk.aws.s3.credentials", hoconL{}},
		{"sdk.aws.boto3.pool_connections", int64(512)},
		{"sdk.google.storage", hoconM{}},
		{"sdk.azure.storage", hoconM{}},
		{"sdk.log.null_log_propagate", false},
		{"sdk.log.task_log_buffer_capacity", int64(66)},
		{"sdk.development.task_reuse_time_window_in_hours", 72.0},
		{"sdk.development.worker.log_stdout", true},
		{"sdk.development.default_output_uri", ""},
		{"sdk.apply_environment", true},
		{"sdk.docker_apply_environment_from_vault", true},
	}
	for _, w := range want {
		path, err := splitHOCONPath(w.path)
		if err != nil {
			t.Fatal(err)
		}
		got, ok := obj.Lookup(path...)
		if !ok {
			t.Errorf("%s: missing", w.path)
			continue
		}
		if g := hoconPlain(got); !reflect.DeepEqual(g, w.val) {
			t.Errorf("%s = %#v, want %#v", w.path, g, w.val)
		}
	}
	rules, _ := obj.Lookup("agent", "snug", "whitelist", "rules")
	wantRules := hoconL{
		hoconM{"host": "api.openai.com", "path_prefix": "/v1/", "inject_headers": false, "tokenizer": "cl100k"},
		hoconM{"host": "api.anthropic.com", "path_prefix": "/v1/", "inject_headers": false, "tokenizer": "claude"},
		hoconM{"host": "claude.ai", "path_prefix": "/", "inject_headers": false, "tokenizer": "claude"},
		hoconM{"host": "generativelanguage.googleapis.com", "path_prefix": "/", "inject_headers": false, "tokenizer": "approx"},
	}
	if got := hoconPlain(rules); !reflect.DeepEqual(got, wantRules) {
		t.Errorf("agent.snug.whitelist.rules = %#v", got)
	}
	// Commented-out keys must not appear.
	for _, p := range [][]string{{"agent", "git_user"}, {"agent", "default_docker", "match_rules"}, {"agent", "cuda_version"}, {"environment"}, {"files"}} {
		if _, ok := obj.Lookup(p...); ok {
			t.Errorf("%s should be absent (commented out)", strings.Join(p, "."))
		}
	}
	// Key order follows the file.
	pm, _ := obj.Lookup("agent", "package_manager")
	if got, want := pm.(*hoconObject).Keys(), []string{"type", "system_site_packages", "force_upgrade", "extra_index_url", "conda_channels", "torch_nightly"}; !reflect.DeepEqual(got, want) {
		t.Errorf("package_manager keys %v", got)
	}
}

func BenchmarkParseHOCONSample(b *testing.B) {
	data := hoconReadSample(b)
	b.SetBytes(int64(len(data)))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := parseHOCON("clearml.conf", data, nil); err != nil {
			b.Fatal(err)
		}
	}
}
