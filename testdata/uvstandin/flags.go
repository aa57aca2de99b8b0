package main

import (
	"os"
	"strings"
)

// flags are real uv's, per command, read from crates/uv-cli/src/lib.rs and
// compat.rs (uv 0.8): "--name" takes no value, "--name=" takes one, "-x" is
// a short form. "global" flags are accepted by every command.
var uvFlags = map[string]string{
	"global": "" +
		"--no-cache --no-cache-dir -n --cache-dir= --python-preference= --managed-python --no-managed-python " +
		"--allow-python-downloads --no-python-downloads --python-fetch= --quiet -q --verbose -v --no-color " +
		"--color= --native-tls --no-native-tls --system-certs --no-system-certs --offline --no-offline " +
		"--allow-insecure-host= --trusted-host= --preview --no-preview --preview-feature= --preview-features= " +
		"--isolated --show-settings --no-progress --no-installer-metadata --directory= --project= " +
		"--config-file= --no-config --help -h --version -V ",
	"venv": "" +
		"--python= -p= --system --no-system --no-project --no-workspace --seed --clear -c --force --no-clear " +
		"--allow-existing --prompt= --system-site-packages --relocatable --no-relocatable --index= " +
		"--default-index= --index-url= -i= --extra-index-url= --find-links= -f= --no-index --index-strategy= " +
		"--keyring-provider= --exclude-newer= --exclude-newer-package= --link-mode= --refresh --no-refresh " +
		"--refresh-package= --no-seed --no-pip --no-setuptools --no-wheel ",
	"sync": "" +
		"--extra= --output-format= --all-extras --no-extra= --no-all-extras --dev --no-dev --only-dev " +
		"--group= --no-group= --no-default-groups --only-group= --all-groups --editable --no-editable " +
		"--no-editable-package= --inexact --no-exact --exact --active --no-active --no-install-project " +
		"--only-install-project --no-install-workspace --only-install-workspace --no-install-local " +
		"--only-install-local --no-install-package= --only-install-package= --locked --frozen --dry-run " +
		"--index= --default-index= --index-url= -i= --extra-index-url= --find-links= -f= --no-index --upgrade " +
		"-U --no-upgrade --upgrade-package= -P= --upgrade-group= --force-reinstall --reinstall --no-reinstall " +
		"--reinstall-package= --index-strategy= --keyring-provider= --resolution= --prerelease= " +
		"--prerelease-package= --pre --fork-strategy= --config-setting= --config-settings= -C= " +
		"--config-settings-package= --no-build-isolation --build-isolation --no-build-isolation-package= " +
		"--exclude-newer= --exclude-newer-package= --link-mode= --compile --compile-bytecode --no-compile " +
		"--no-compile-bytecode --no-sources --no-sources-package= --no-build --build --no-build-package= " +
		"--no-binary --binary --no-binary-package= --refresh --no-refresh --refresh-package= --all-packages " +
		"--package= --script= --python= -p= --python-platform= --check --no-check ",
	"run": "" +
		"--extra= --all-extras --no-extra= --no-all-extras --dev --no-dev --only-dev --group= --no-group= " +
		"--no-default-groups --only-group= --all-groups --module -m --editable --no-editable " +
		"--no-editable-package= --inexact --no-exact --exact --env-file= --no-env-file --with= -w= " +
		"--with-editable= --with-requirements= --isolated --active --no-active --no-sync --locked --frozen " +
		"--script -s --gui-script --index= --default-index= --index-url= -i= --extra-index-url= --find-links= " +
		"-f= --no-index --upgrade -U --no-upgrade --upgrade-package= -P= --upgrade-group= --force-reinstall " +
		"--reinstall --no-reinstall --reinstall-package= --index-strategy= --keyring-provider= --resolution= " +
		"--prerelease= --prerelease-package= --pre --fork-strategy= --config-setting= --config-settings= -C= " +
		"--config-settings-package= --no-build-isolation --build-isolation --no-build-isolation-package= " +
		"--exclude-newer= --exclude-newer-package= --link-mode= --compile --compile-bytecode --no-compile " +
		"--no-compile-bytecode --no-sources --no-sources-package= --no-build --build --no-build-package= " +
		"--no-binary --binary --no-binary-package= --refresh --no-refresh --refresh-package= --all-packages " +
		"--package= --no-project --no-workspace --python= -p= --show-resolution --max-recursion-depth= " +
		"--python-platform= ",
	"pip install": "" +
		"--requirement= --requirements= -r= --editable= -e= --no-editable --no-editable-package= " +
		"--constraint= --constraints= -c= --override= --overrides= --exclude= --excludes= --build-constraint= " +
		"--build-constraints= -b= --extra= --all-extras --no-all-extras --group= --index= --default-index= " +
		"--index-url= -i= --extra-index-url= --find-links= -f= --no-index --upgrade -U --no-upgrade " +
		"--upgrade-package= -P= --upgrade-group= --force-reinstall --reinstall --no-reinstall " +
		"--reinstall-package= --index-strategy= --keyring-provider= --resolution= --prerelease= " +
		"--prerelease-package= --pre --fork-strategy= --config-setting= --config-settings= -C= " +
		"--config-settings-package= --no-build-isolation --build-isolation --no-build-isolation-package= " +
		"--exclude-newer= --exclude-newer-package= --link-mode= --compile --compile-bytecode --no-compile " +
		"--no-compile-bytecode --no-sources --no-sources-package= --refresh --no-refresh --refresh-package= " +
		"--no-deps --deps --require-hashes --no-require-hashes --verify-hashes --no-verify-hashes --python= " +
		"-p= --system --no-system --break-system-packages --no-break-system-packages --target= -t= --prefix= " +
		"--no-build --build --no-binary= --only-binary= --python-version= --python-platform= --inexact " +
		"--no-exact --exact --strict --no-strict --dry-run --torch-backend= --disable-pip-version-check " +
		"--user ",
	"pip freeze": "" +
		"--exclude-editable --strict --no-strict --python= -p= --system --no-system --target= -t= --prefix= " +
		"--disable-pip-version-check ",
	"pip uninstall": "" +
		"--requirement= --requirements= -r= --python= -p= --keyring-provider= --system --no-system " +
		"--break-system-packages --no-break-system-packages --target= -t= --prefix= --dry-run --yes -y " +
		"--disable-pip-version-check ",
	"pip list": "" +
		"--editable -e --exclude-editable --format= --outdated --no-outdated --strict --no-strict --index= " +
		"--default-index= --index-url= -i= --extra-index-url= --find-links= -f= --no-index --index-strategy= " +
		"--keyring-provider= --exclude-newer= --exclude-newer-package= --python= -p= --system --no-system " +
		"--target= -t= --prefix= --disable-pip-version-check ",
}

// knownCommands are uv's other commands: accepted names, not imitated.
var knownCommands = "auth add remove version lock export tree format tool tools python pip build publish " +
	"build-backend cache self clean generate-shell-completion help init workspace"

var pipCommands = "compile sync install uninstall freeze list show tree check"

// parsed is a command line.
type parsed struct {
	cmd   string              // "venv", "pip install", "sync", "run", ...
	flags map[string][]string // long name without "--" -> values ("" when none)
	pos   []string            // positionals
	rest  []string            // uv run: the command and its arguments
}

func (p *parsed) has(name string) bool { _, ok := p.flags[name]; return ok }

func (p *parsed) last(name string) string {
	v := p.flags[name]
	if len(v) == 0 {
		return ""
	}
	return v[len(v)-1]
}

// flagSpec is one accepted flag: its long name (for a short one, the long
// name it stands for) and whether it takes a value.
type flagSpec struct {
	long  string
	value bool
}

// specs builds the flags a command accepts.
func specs(cmd string) map[string]flagSpec {
	out := map[string]flagSpec{}
	add := func(table string) {
		var lastLong string
		for _, tok := range strings.Fields(table) {
			value := strings.HasSuffix(tok, "=")
			name := strings.TrimSuffix(tok, "=")
			if strings.HasPrefix(name, "--") {
				lastLong = name[2:]
				out[name] = flagSpec{lastLong, value}
			} else {
				out[name] = flagSpec{lastLong, value} // a short form follows its long name
			}
		}
	}
	add(uvFlags["global"])
	if cmd != "" {
		add(uvFlags[cmd])
	}
	return out
}

// aliases map a flag to the name the stand-in reads it by.
var aliases = map[string]string{
	"requirements": "requirement", "constraints": "constraint", "reinstall": "force-reinstall",
	"no-cache-dir": "no-cache", "trusted-host": "allow-insecure-host", "config-settings": "config-setting",
	"no-workspace": "no-project", "compile": "compile-bytecode", "no-exact": "inexact", "overrides": "override",
	"excludes": "exclude", "build-constraints": "build-constraint", "preview-features": "preview-feature",
}

// parse reads a command line as clap would for uv.
func parse(args []string) (*parsed, error) {
	p := &parsed{flags: map[string][]string{}}
	allowed := specs("")
	for i := 0; i < len(args); i++ {
		a := args[i]
		switch {
		case a == "--":
			if p.cmd == "run" {
				p.rest = args[i+1:]
				return p, nil
			}
			p.pos = append(p.pos, args[i+1:]...)
			return p, nil
		case strings.HasPrefix(a, "--"):
			n, err := p.long(allowed, args, i)
			if err != nil {
				return nil, err
			}
			i += n
		case strings.HasPrefix(a, "-") && len(a) > 1:
			n, err := p.short(allowed, args, i)
			if err != nil {
				return nil, err
			}
			i += n
		default:
			done, err := p.word(&allowed, args, i)
			if err != nil || done {
				return p, err
			}
		}
	}
	if strings.HasPrefix(p.cmd, "pip") && !strings.Contains(p.cmd, " ") {
		return nil, fail("'uv pip' requires a subcommand but one was not provided")
	}
	return p, nil
}

// word takes a positional: the command name, or an argument.
func (p *parsed) word(allowed *map[string]flagSpec, args []string, i int) (done bool, err error) {
	a := args[i]
	switch {
	case p.cmd == "":
		if !strings.Contains(" "+knownCommands+" venv sync run ", " "+a+" ") {
			return false, fail("unrecognized subcommand '%s'", a)
		}
		p.cmd = a
	case p.cmd == "pip":
		if !strings.Contains(" "+pipCommands+" ", " "+a+" ") {
			return false, fail("unrecognized subcommand '%s'", a)
		}
		p.cmd = "pip " + a
	case p.cmd == "run":
		p.rest = args[i:]
		return true, nil
	default:
		p.pos = append(p.pos, a)
		return false, nil
	}
	if _, ok := uvFlags[p.cmd]; ok {
		*allowed = specs(p.cmd)
	} else if p.cmd != "pip" {
		*allowed = map[string]flagSpec{} // not imitated: anything goes, run() refuses
	}
	return false, nil
}

func (p *parsed) set(spec flagSpec, value string) {
	name := spec.long
	if a, ok := aliases[name]; ok {
		name = a
	}
	p.flags[name] = append(p.flags[name], value)
}

// long reads --name, --name=value or --name value; it returns how many
// extra arguments it used.
func (p *parsed) long(allowed map[string]flagSpec, args []string, i int) (int, error) {
	name, value, hasValue := strings.Cut(args[i], "=")
	spec, ok := allowed[name]
	if !ok {
		if len(allowed) == 0 {
			return 0, nil
		}
		return 0, fail("unexpected argument '%s' found", name)
	}
	switch {
	case !spec.value && hasValue:
		if value != "true" && value != "false" && value != "1" && value != "0" {
			return 0, fail("unexpected value '%s' for '%s' found; no more were expected", value, name)
		}
		p.set(spec, "")
		return 0, nil
	case !spec.value:
		p.set(spec, "")
		return 0, nil
	case hasValue:
		p.set(spec, value)
		return 0, nil
	case i+1 < len(args) && !strings.HasPrefix(args[i+1], "-"):
		p.set(spec, args[i+1])
		return 1, nil
	}
	return 0, fail("a value is required for '%s <%s>' but none was supplied", name, strings.ToUpper(spec.long))
}

// short reads -x, -xVALUE, -x=VALUE, -x VALUE and clusters like -qq.
func (p *parsed) short(allowed map[string]flagSpec, args []string, i int) (int, error) {
	a := args[i]
	for j := 1; j < len(a); j++ {
		name := "-" + a[j:j+1]
		spec, ok := allowed[name]
		if !ok {
			if len(allowed) == 0 {
				return 0, nil
			}
			return 0, fail("unexpected argument '%s' found", name)
		}
		if !spec.value {
			if j+1 < len(a) && a[j+1] == '=' {
				return 0, fail("unexpected value '%s' for '%s' found; no more were expected", a[j+2:], name)
			}
			p.set(spec, "")
			continue
		}
		if rest := strings.TrimPrefix(a[j+1:], "="); rest != "" {
			p.set(spec, rest)
			return 0, nil
		}
		if i+1 < len(args) && !strings.HasPrefix(args[i+1], "-") {
			p.set(spec, args[i+1])
			return 1, nil
		}
		return 0, fail("a value is required for '%s <%s>' but none was supplied", name, strings.ToUpper(spec.long))
	}
	return 0, nil
}

// enums are the values uv accepts for a few flags (and their variables).
var enums = map[string]string{
	"index-strategy": "first-index unsafe-first-match unsafe-best-match first-match unsafe-any-match",
	"link-mode":      "clone copy hardlink symlink",
	"prerelease":     "disallow allow if-necessary explicit if-necessary-or-explicit",
	"resolution":     "highest lowest lowest-direct",
	"color":          "auto always never",
}

var envEnums = map[string]string{"UV_INDEX_STRATEGY": "index-strategy", "UV_LINK_MODE": "link-mode", "UV_PRERELEASE": "prerelease", "UV_RESOLUTION": "resolution"}

// validate applies clap's value checks and the conflicts the agent could hit.
func (p *parsed) validate() error {
	for flag, vals := range enums {
		for _, v := range p.flags[flag] {
			if !strings.Contains(" "+vals+" ", " "+v+" ") {
				return fail("invalid value '%s' for '--%s <%s>'\n  [possible values: %s]", v, flag, strings.ToUpper(flag), strings.ReplaceAll(vals, " ", ", "))
			}
		}
	}
	for env, flag := range envEnums {
		if v, ok := os.LookupEnv(env); ok && v != "" && !strings.Contains(" "+enums[flag]+" ", " "+v+" ") {
			return fail("invalid value '%s' for '--%s <%s>'\n  [possible values: %s]", v, flag, strings.ToUpper(flag), strings.ReplaceAll(enums[flag], " ", ", "))
		}
	}
	for _, c := range [][2]string{{"locked", "frozen"}, {"locked", "upgrade"}, {"frozen", "upgrade"}, {"quiet", "verbose"}, {"no-clear", "allow-existing"}, {"all-extras", "extra"}} {
		if p.has(c[0]) && p.has(c[1]) {
			return fail("the argument '--%s' cannot be used with '--%s'", c[0], c[1])
		}
	}
	if p.cmd == "pip install" && p.has("user") {
		return fail("pip's `--user` is unsupported (use a virtual environment instead)")
	}
	if p.cmd == "pip install" && len(p.pos) == 0 && !p.has("requirement") && !p.has("editable") && !p.has("group") {
		return fail("the following required arguments were not provided:\n  <PACKAGE|--requirements <REQUIREMENTS>|--editable <EDITABLE>|--group <GROUP>>")
	}
	if p.cmd == "venv" && len(p.pos) > 1 {
		return fail("unexpected argument '%s' found", p.pos[1])
	}
	return nil
}
