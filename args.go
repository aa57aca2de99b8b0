package main

// Argv handling that mirrors Python argparse as the reference agent uses it:
// unambiguous long-option prefixes, nargs '+', '*' and '?', counted short
// flags, clustered short flags and @file argument files. The standard flag
// package parses none of these the same way, and scripts written for the
// reference must keep their meaning, so argv is parsed here (as cmd/go's
// CustomFlags commands do) and the values are stored in the command's
// flag.FlagSet (flags.go), which stays the table of what each command takes.

import (
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"sort"
	"strings"
)

// usageError is a command-line mistake: exit status 2.
type usageError struct{ msg string }

func (e *usageError) Error() string { return e.msg }

func usagef(format string, args ...any) error {
	return &usageError{fmt.Sprintf(format, args...)}
}

func isBoolFlag(f *flag.Flag) bool {
	bf, ok := f.Value.(boolFlagger)
	return ok && bf.IsBoolFlag()
}

// isNegativeNumber matches argparse's ^-\d+$|^-\d*\.\d+$.
func isNegativeNumber(s string) bool {
	if len(s) < 2 || s[0] != '-' {
		return false
	}
	intPart, frac, hasDot := strings.Cut(s[1:], ".")
	digits := func(d string) bool {
		for _, r := range d {
			if r < '0' || r > '9' {
				return false
			}
		}
		return true
	}
	if !hasDot {
		return intPart != "" && digits(intPart)
	}
	return frac != "" && digits(intPart) && digits(frac)
}

// looksLikeOption mirrors argparse's test for whether a token starts a new
// option: "-" alone, negative numbers and unknown tokens with a space in them
// are values (so --docker img "--ipc=host -v x" keeps the last token).
func looksLikeOption(fs *flag.FlagSet, tok string) bool {
	if len(tok) < 2 || tok[0] != '-' {
		return false
	}
	if strings.HasPrefix(tok, "--") {
		name, _, _ := strings.Cut(tok[2:], "=")
		if full, err := resolveLong(fs, name); full != "" || err != nil {
			return true
		}
	}
	return !isNegativeNumber(tok) && !strings.Contains(tok, " ")
}

// expandArgFiles replaces every "@path" with the lines of that file, one
// argument per line, recursively (argparse's fromfile_prefix_chars="@").
func expandArgFiles(args []string, depth int) ([]string, error) {
	if depth > 10 {
		return nil, usagef("@file arguments nest too deeply (more than 10 levels)")
	}
	var out []string
	for _, a := range args {
		if len(a) < 2 || a[0] != '@' {
			out = append(out, a)
			continue
		}
		data, err := os.ReadFile(a[1:])
		if err != nil {
			return nil, usagef("cannot read argument file %s: %v", a[1:], errors.Unwrap(err))
		}
		var lines []string
		for _, l := range strings.Split(strings.ReplaceAll(string(data), "\r\n", "\n"), "\n") {
			if l != "" {
				lines = append(lines, l)
			}
		}
		sub, err := expandArgFiles(lines, depth+1)
		if err != nil {
			return nil, err
		}
		out = append(out, sub...)
	}
	return out, nil
}

// longNames lists a FlagSet's long options (more than one letter), sorted.
func longNames(fs *flag.FlagSet) []string {
	var names []string
	fs.VisitAll(func(f *flag.Flag) {
		if len(f.Name) > 1 {
			names = append(names, f.Name)
		}
	})
	names = append(names, "help")
	sort.Strings(names)
	return names
}

// resolveLong finds the option a "--name" token means: exact, else a unique prefix.
func resolveLong(fs *flag.FlagSet, name string) (string, error) {
	names := longNames(fs)
	for _, n := range names {
		if n == name {
			return n, nil
		}
	}
	var matches []string
	for _, n := range names {
		if strings.HasPrefix(n, name) {
			matches = append(matches, "--"+n)
		}
	}
	switch len(matches) {
	case 1:
		return matches[0][2:], nil
	case 0:
		return "", nil
	}
	return "", usagef("ambiguous option: --%s could match %s", name, strings.Join(matches, ", "))
}

// parseArgs parses args into fs the way argparse would. shorts maps
// single-letter options to flag names; "h" means help. It returns
// errHelp when help was asked for.
func parseArgs(fs *flag.FlagSet, shorts map[string]string, args []string) error {
	for i := 0; i < len(args); i++ {
		tok := args[i]
		if tok == "--" {
			if i+1 < len(args) {
				return usagef("unrecognized arguments: %s", strings.Join(args[i+1:], " "))
			}
			return nil
		}
		if !looksLikeOption(fs, tok) {
			return usagef("unrecognized arguments: %s", strings.Join(args[i:], " "))
		}
		if strings.HasPrefix(tok, "--") {
			name, explicit, hasExplicit := strings.Cut(tok[2:], "=")
			full, err := resolveLong(fs, name)
			if err != nil {
				return err
			}
			if full == "" {
				return usagef("unrecognized arguments: %s", tok)
			}
			if full == "help" {
				return flag.ErrHelp
			}
			n, err := takeValues(fs, full, "--"+full, explicit, hasExplicit, args[i+1:])
			if err != nil {
				return err
			}
			i += n
			continue
		}
		// Short options, possibly clustered: -OO, -Od, -d.
		rest := tok[1:]
		for len(rest) > 0 {
			letter := rest[:1]
			rest = rest[1:]
			if letter == "h" {
				return flag.ErrHelp
			}
			full, ok := shorts[letter]
			if !ok {
				return usagef("unrecognized arguments: %s", tok)
			}
			f := fs.Lookup(full)
			if isBoolFlag(f) {
				if err := fs.Set(full, "true"); err != nil {
					return usagef("argument -%s: %v", letter, err)
				}
				continue
			}
			// A value-taking short option eats the rest of the token or the next arg.
			explicit := strings.TrimPrefix(rest, "=")
			n, err := takeValues(fs, full, "-"+letter, explicit, rest != "", args[i+1:])
			if err != nil {
				return err
			}
			i += n
			rest = ""
		}
	}
	return nil
}

// takeValues stores one occurrence of option name and returns how many of
// the following args it consumed.
func takeValues(fs *flag.FlagSet, name, shown, explicit string, hasExplicit bool, next []string) (int, error) {
	f := fs.Lookup(name)
	fail := func(err error) error { return usagef("argument %s: %v", shown, err) }
	switch v := f.Value.(type) {
	case *listFlag:
		var vals []string
		n := 0
		if hasExplicit {
			vals = append(vals, explicit)
		} else {
			for n < len(next) && !looksLikeOption(fs, next[n]) {
				vals = append(vals, next[n])
				n++
			}
		}
		if len(vals) < v.min {
			return 0, fail(errors.New("expected at least one argument"))
		}
		if vals == nil {
			vals = []string{}
		}
		b, _ := json.Marshal(vals)
		return n, fs.Set(name, string(b))
	case *optIntFlag:
		if hasExplicit {
			if err := v.Set(explicit); err != nil {
				return 0, fail(err)
			}
			return 0, nil
		}
		if len(next) > 0 && !looksLikeOption(fs, next[0]) {
			if err := fs.Set(name, next[0]); err != nil {
				return 0, fail(err)
			}
			return 1, nil
		}
		return 0, fs.Set(name, "")
	}
	if isBoolFlag(f) {
		if hasExplicit {
			return 0, fail(fmt.Errorf("ignored explicit argument '%s'", explicit))
		}
		if err := fs.Set(name, "true"); err != nil {
			return 0, fail(err)
		}
		return 0, nil
	}
	val, n := explicit, 0
	if !hasExplicit {
		if len(next) == 0 || looksLikeOption(fs, next[0]) {
			return 0, fail(errors.New("expected one argument"))
		}
		val, n = next[0], 1
	}
	if err := fs.Set(name, val); err != nil {
		return 0, fail(err)
	}
	return n, nil
}

// flagWasSet reports whether the named flag was given on the command line.
func flagWasSet(fs *flag.FlagSet, name string) bool {
	set := false
	fs.Visit(func(f *flag.Flag) {
		if f.Name == name {
			set = true
		}
	})
	return set
}
