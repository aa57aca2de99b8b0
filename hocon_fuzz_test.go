package main

import (
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"testing"
)

// FuzzParseHOCON checks that no input panics or hangs, that errors are
// located, and that a successful parse leaves no pending nodes behind.
func FuzzParseHOCON(f *testing.F) {
	files, _ := filepath.Glob(filepath.Join("testdata", "hocon", "*.conf"))
	sub, _ := filepath.Glob(filepath.Join("testdata", "hocon", "sub", "*.conf"))
	for _, name := range append(append(files, sub...), hoconSamplePath) {
		if data, err := os.ReadFile(name); err == nil {
			f.Add(data)
		}
	}
	for _, s := range []string{
		"a = ${b}\nb = ${a}",
		"a = [1, 2]\nb = ${a} ${a}\nc = ${b} ${b}\nd = ${c} ${c}",
		"a { b = ${a} }",
		"a = ${?x} foo ${?y}\nx = 1",
		"p = ${p}:x\np = ${p}:y",
		"a += 1\na += ${a}",
		"a = \"\"\"x\"\"\"\" \"\\u00e9\"",
		"{ \"k\": [ {a: 1}, {b: ${k}} ] }",
		"include \"testdata/hocon/include_child.conf\"",
		"a = [[[[{}]]]]",
		"a = 1\nb = x\x00y",
		"a = \"caf\xe9\"",
		"\xff\xfea\x00=\x001\x00",
		"a = \"\xc3\"\n",
		"\xef\xbb\xbfa = \"\ufffd\"",
	} {
		f.Add([]byte(s))
	}
	env := mapEnv(map[string]string{"HOME": "/home/fuzz", "x": "1"})
	f.Fuzz(func(t *testing.T, data []byte) {
		obj, err := parseHOCON("fuzz.conf", data, env)
		if err != nil {
			var he *hoconError
			if !errors.As(err, &he) || he.Line < 1 || he.Col < 1 {
				t.Fatalf("error without a location: %v", err)
			}
			return
		}
		hoconCheckResolved(t, obj)
		if !reflect.DeepEqual(hoconPlain(obj.Clone()), hoconPlain(obj)) {
			t.Fatal("Clone differs from the original")
		}
	})
}

// hoconCheckResolved fails if v holds anything but final value types.
func hoconCheckResolved(t *testing.T, v any) {
	switch x := v.(type) {
	case *hoconObject:
		if len(x.keys) != len(x.vals) {
			t.Fatalf("object has %d keys but %d values", len(x.keys), len(x.vals))
		}
		for _, k := range x.keys {
			e, ok := x.vals[k]
			if !ok {
				t.Fatalf("key %q listed but missing", k)
			}
			hoconCheckResolved(t, e)
		}
	case []any:
		for _, e := range x {
			hoconCheckResolved(t, e)
		}
	case string, int64, float64, bool, nil:
	default:
		t.Fatalf("unresolved value %T (%v) in result", v, v)
	}
}
