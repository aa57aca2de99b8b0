package main

import (
	"fmt"
	"sort"
	"strings"
	"testing"
)

// defaultsIntended are the keys (or whole sections) where defaults.conf
// knowingly differs from the reference's shipped files, with the reason.
// A key that differs and is not listed fails the test, and so does a
// listed key that no longer differs.
var defaultsIntended = map[string]string{
	// agent.conf
	"agent.bootstrap": "this agent has no bootstrap package: the static binary itself is mounted " +
		"into containers, so there is nothing to download, cache or check (install-bootstrap and " +
		"--check-bootstrap are accepted and say so)",
	"agent.docker_internal_mounts.bootstrap_folder": "no bootstrap package (see agent.bootstrap)",
	"agent.docker_internal_mounts.bootstrap_cache":  "no bootstrap package (see agent.bootstrap)",
	"agent.docker_apply_environment_from_vault": "an Enterprise vault feature (the reference ignores it " +
		"elsewhere too); this agent reads no vaults",
}

// TestDefaultsMatchReference compares the built-in defaults with the
// reference agent's default configuration of 3.0.3 (agent.conf and
// api.conf, kept verbatim in testdata/reference/), leaf by leaf.
func TestDefaultsMatchReference(t *testing.T) {
	ours, err := parseHOCON("defaults.conf", defaultsConf, nil)
	if err != nil {
		t.Fatal(err)
	}
	mine := map[string]string{}
	flattenDefaults("", ours, mine)
	ref := map[string]string{}
	for _, section := range []string{"agent", "api"} {
		obj, err := parseHOCONFile("testdata/reference/"+section+"-3.0.3.conf", nil)
		if err != nil {
			t.Fatal(err)
		}
		flattenDefaults(section, obj, ref)
	}
	used := map[string]bool{}
	intended := func(key string) bool {
		for k := range defaultsIntended {
			if key == k || strings.HasPrefix(key, k+".") {
				used[k] = true
				return true
			}
		}
		return false
	}
	keys := map[string]bool{}
	for k := range ref {
		keys[k] = true
	}
	for k := range mine {
		if strings.HasPrefix(k, "agent.") || strings.HasPrefix(k, "api.") {
			keys[k] = true
		}
	}
	var sorted []string
	for k := range keys {
		sorted = append(sorted, k)
	}
	sort.Strings(sorted)
	for _, k := range sorted {
		r, inRef := ref[k]
		m, inMine := mine[k]
		if inRef == inMine && r == m {
			continue
		}
		if intended(k) {
			continue
		}
		switch {
		case !inMine:
			t.Errorf("%s: the reference's default is %s; defaults.conf lacks it", k, r)
		case !inRef:
			t.Errorf("%s: defaults.conf sets %s; the reference ships no such default", k, m)
		default:
			t.Errorf("%s: defaults.conf has %s, the reference %s", k, m, r)
		}
	}
	for k := range defaultsIntended {
		if !used[k] {
			t.Errorf("%s is listed as an intended difference but matches the reference: drop it from defaultsIntended", k)
		}
	}
}

// flattenDefaults writes each leaf of v under its dotted path. Values are
// rendered with their type (a string "1" is not the number 1); a list of
// objects is rendered whole, keys sorted.
func flattenDefaults(prefix string, v any, out map[string]string) {
	if o, ok := v.(*hoconObject); ok {
		for _, k := range o.Keys() {
			x, _ := o.Get(k)
			p := k
			if prefix != "" {
				p = prefix + "." + k
			}
			flattenDefaults(p, x, out)
		}
		return
	}
	out[prefix] = renderDefault(v)
}

func renderDefault(v any) string {
	switch x := v.(type) {
	case *hoconObject:
		m := map[string]string{}
		flattenDefaults("", x, m)
		keys := make([]string, 0, len(m))
		for k := range m {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		parts := make([]string, len(keys))
		for i, k := range keys {
			parts[i] = k + "=" + m[k]
		}
		return "{" + strings.Join(parts, ", ") + "}"
	case []any:
		parts := make([]string, len(x))
		for i, e := range x {
			parts[i] = renderDefault(e)
		}
		return "[" + strings.Join(parts, ", ") + "]"
	case string:
		return fmt.Sprintf("%q", x)
	default:
		return fmt.Sprintf("%v", x)
	}
}
