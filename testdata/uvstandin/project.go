package main

import (
	"bufio"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
)

// findProject is the folder of the pyproject.toml uv would use.
func findProject(p *parsed) (string, error) {
	start := p.last("project")
	if start == "" {
		start = p.last("directory")
	}
	if start == "" {
		start, _ = os.Getwd()
	}
	start, _ = filepath.Abs(start)
	for d := start; ; d = filepath.Dir(d) {
		if _, err := os.Stat(filepath.Join(d, "pyproject.toml")); err == nil {
			return d, nil
		}
		if d == filepath.Dir(d) {
			return "", fail("No `pyproject.toml` found in current directory or any parent directory")
		}
	}
}

// projectVenv is where uv keeps a project's environment.
func projectVenv(dir string) string {
	if v := os.Getenv("UV_PROJECT_ENVIRONMENT"); v != "" {
		if filepath.IsAbs(v) {
			return v
		}
		return filepath.Join(dir, v)
	}
	return filepath.Join(dir, ".venv")
}

// toml is the part of a TOML file the stand-in reads: string values and
// arrays of strings, by dotted table path ("project.dependencies").
type toml map[string][]string

var (
	tomlTable  = regexp.MustCompile(`^\[\s*([^\]\[]+?)\s*\]\s*(#.*)?$`)
	tomlArrTab = regexp.MustCompile(`^\[\[\s*([^\]]+?)\s*\]\]\s*(#.*)?$`)
	tomlKey    = regexp.MustCompile(`^([A-Za-z0-9_.-]+|"[^"]*")\s*=\s*(.*)$`)
	tomlString = regexp.MustCompile(`"((?:[^"\\]|\\.)*)"|'([^']*)'`)
)

// readTOML reads path; [[array]] tables get an index: "package.0.name".
func readTOML(path string) (toml, bool, error) {
	data, err := os.ReadFile(path)
	if os.IsNotExist(err) {
		return nil, false, nil
	}
	if err != nil {
		return nil, false, err
	}
	out := toml{}
	table := ""
	counts := map[string]int{}
	sc := bufio.NewScanner(strings.NewReader(string(data)))
	sc.Buffer(nil, 1<<20)
	var key string
	var open bool
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if open {
			out[key] = append(out[key], strs(line)...)
			open = !strings.HasPrefix(strings.TrimSpace(tomlString.ReplaceAllString(line, "")), "]") && !strings.Contains(tomlString.ReplaceAllString(line, ""), "]")
			continue
		}
		if m := tomlArrTab.FindStringSubmatch(line); m != nil {
			table = fmt.Sprintf("%s.%d", m[1], counts[m[1]])
			counts[m[1]]++
			continue
		}
		if m := tomlTable.FindStringSubmatch(line); m != nil {
			table = strings.ReplaceAll(m[1], " ", "")
			out[table] = nil
			continue
		}
		m := tomlKey.FindStringSubmatch(line)
		if m == nil {
			continue
		}
		key = strings.Trim(m[1], `"`)
		if table != "" {
			key = table + "." + key
		}
		val := m[2]
		out[key] = strs(val)
		if strings.HasPrefix(val, "[") {
			rest := tomlString.ReplaceAllString(val, "")
			open = !strings.Contains(rest, "]")
		} else if strings.HasPrefix(val, "{") {
			out[key] = []string{val}
		}
	}
	return out, true, sc.Err()
}

func strs(s string) []string {
	var out []string
	for _, m := range tomlString.FindAllStringSubmatch(s, -1) {
		out = append(out, m[1]+m[2])
	}
	return out
}

var reqName = regexp.MustCompile(`^\s*([A-Za-z0-9][A-Za-z0-9._-]*)`)

func normalize(name string) string {
	return strings.ToLower(regexp.MustCompile(`[-_.]+`).ReplaceAllString(name, "-"))
}

// dependencies are the requirement strings uv sync installs for p.
func dependencies(pj toml, p *parsed) []string {
	deps := append([]string(nil), pj["project.dependencies"]...)
	extras := p.flags["extra"]
	if p.has("all-extras") {
		extras = nil
		for k := range pj {
			if e, ok := strings.CutPrefix(k, "project.optional-dependencies."); ok {
				extras = append(extras, e)
			}
		}
		sort.Strings(extras)
	}
	for _, e := range extras {
		for _, x := range strings.Split(e, ",") {
			deps = append(deps, pj["project.optional-dependencies."+x]...)
		}
	}
	if !p.has("no-dev") && !p.has("no-default-groups") {
		deps = append(deps, pj["dependency-groups.dev"]...)
		deps = append(deps, pj["tool.uv.dev-dependencies"]...)
	}
	for _, g := range p.flags["group"] {
		deps = append(deps, pj["dependency-groups."+g]...)
	}
	return deps
}

// lockPins reads uv.lock's packages: normalized name -> version, and the
// project's own entry (source virtual or editable ".").
func lockPins(lock toml, project string) map[string]string {
	pins := map[string]string{}
	for i := 0; ; i++ {
		names, ok := lock[fmt.Sprintf("package.%d.name", i)]
		if !ok || len(names) == 0 {
			break
		}
		n := normalize(names[0])
		if n == normalize(project) {
			continue
		}
		if v := lock[fmt.Sprintf("package.%d.version", i)]; len(v) > 0 {
			pins[n] = v[0]
		}
	}
	return pins
}

// sync does what `uv sync` does for the agent and returns the venv.
func sync(p *parsed) (string, error) {
	dir, err := findProject(p)
	if err != nil {
		return "", err
	}
	pj, _, err := readTOML(filepath.Join(dir, "pyproject.toml"))
	if err != nil {
		return "", err
	}
	if _, ok := pj["project"]; !ok && len(pj["project.name"]) == 0 {
		return "", fail("No `project` table found in: `%s`", filepath.Join(dir, "pyproject.toml"))
	}
	project := ""
	if n := pj["project.name"]; len(n) > 0 {
		project = n[0]
	}
	if _, ok := pj["build-system"]; ok && !p.has("no-install-project") {
		return "", notImitated("installing the project itself (it has a [build-system]; pass --no-install-project)")
	}
	deps := dependencies(pj, p)
	lockPath := filepath.Join(dir, "uv.lock")
	lock, haveLock, err := readTOML(lockPath)
	if err != nil {
		return "", err
	}
	check := ""
	if p.has("locked") {
		check = "--locked"
	} else if p.has("frozen") {
		check = "--frozen"
	}
	if !haveLock && check != "" {
		return "", fail("Unable to find lockfile at `uv.lock`, but `%s` was provided. To create a lockfile, run `uv lock` or `uv sync` without the flag.", check)
	}
	pins := lockPins(lock, project)
	var install []string
	for _, d := range deps {
		m := reqName.FindStringSubmatch(d)
		if m == nil {
			return "", fail("Failed to parse: `%s`", d)
		}
		n := normalize(m[1])
		v, locked := pins[n]
		if haveLock && !locked && check != "--frozen" {
			if check == "--locked" {
				return "", fail("The lockfile at `uv.lock` needs to be updated, but `--locked` was provided. To update the lockfile, run `uv lock`.")
			}
		}
		if locked {
			if spec := strings.TrimSpace(d[len(m[0]):]); strings.HasPrefix(spec, "==") && strings.TrimPrefix(spec, "==") != v && check == "--locked" {
				return "", fail("The lockfile at `uv.lock` needs to be updated, but `--locked` was provided. To update the lockfile, run `uv lock`.")
			}
			install = append(install, m[1]+"=="+v)
		} else {
			install = append(install, d)
		}
	}
	venv := projectVenv(dir)
	if _, err := os.Stat(filepath.Join(venv, "pyvenv.cfg")); err != nil {
		vp := &parsed{flags: map[string][]string{"python": p.flags["python"]}, pos: []string{venv}}
		if err := cmdVenv(vp); err != nil {
			return "", err
		}
	}
	if len(install) > 0 {
		args, err := indexArgs(&parsed{flags: pick(p.flags, "index-url", "default-index", "extra-index-url", "index", "find-links", "no-index", "upgrade", "force-reinstall")})
		if err != nil {
			return "", err
		}
		if err := pipFor(filepath.Join(venv, "bin", "python"), venv, append(append([]string{"install"}, args...), install...)...); err != nil {
			return "", err
		}
	}
	if !haveLock {
		if err := writeLock(lockPath, venv, project); err != nil {
			return "", err
		}
	}
	return venv, nil
}

func pick(m map[string][]string, keys ...string) map[string][]string {
	out := map[string][]string{}
	for _, k := range keys {
		if v, ok := m[k]; ok {
			out[k] = v
		}
	}
	return out
}

// writeLock records what was installed, in uv.lock's shape.
func writeLock(path, venv, project string) error {
	var b strings.Builder
	b.WriteString("version = 1\nrevision = 3\n")
	fmt.Fprintf(&b, "\n[[package]]\nname = %q\nversion = \"0\"\nsource = { virtual = \".\" }\n", project)
	base, err := basePython(venv)
	if err != nil {
		return err
	}
	out, err := commandOutput(base, "-m", "pip", "--python", filepath.Join(venv, "bin", "python"), "--disable-pip-version-check", "freeze")
	if err != nil {
		return err
	}
	for _, l := range strings.Split(out, "\n") {
		name, ver, ok := strings.Cut(strings.TrimSpace(l), "==")
		if ok {
			fmt.Fprintf(&b, "\n[[package]]\nname = %q\nversion = %q\nsource = { registry = \"standin\" }\n", normalize(name), ver)
		}
	}
	return os.WriteFile(path, []byte(b.String()), 0o644)
}
