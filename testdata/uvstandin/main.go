// Command uv is a stand-in for uv (https://github.com/astral-sh/uv) in the
// agent's tests: uv cannot be installed on the machines the tests run on.
//
// It records every call (argv, working directory, and the UV_*, PIP_*,
// VIRTUAL_ENV, CONDA_PREFIX, PYTHONPATH variables) as one JSON line in
// $UV_STANDIN_LOG, then does the work the agent relies on with Python's own
// venv module and pip:
//
//	uv venv [--python P] [--clear|--allow-existing] [--system-site-packages] [--seed] [PATH]
//	uv pip install|uninstall|freeze|list [--python P] ...
//	uv sync [--locked|--frozen] [--extra X|--all-extras] [--no-dev] [index flags]
//	uv run [options] COMMAND [ARGS...]
//	uv --version
//
// It stays honest: the flags each command accepts are real uv's (read from
// uv's crates/uv-cli, see flags.go), so an argument real uv would reject
// fails here too, with clap's exit status 2 and an "error:" line. A real uv
// argument the stand-in cannot imitate fails with exit status 3 and says so,
// rather than pretend. uv's own errors that the agent must handle are
// reproduced with uv's words: a missing or stale uv.lock under --locked, no
// pyproject.toml, no [project] table, no virtual environment, an existing
// venv without --clear.
//
// Not imitated: resolution (pip resolves), uv sync's removal of packages
// that are not locked, installing the project itself (a project with a
// [build-system] needs --no-install-project; a "virtual" project has none),
// Python downloads.
package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"strings"
)

const version = "uv 0.8.99 (clearml-agent test stand-in)"

// exitError carries the exit status: 2 for what uv rejects, 3 for what the
// stand-in does not imitate, 1 for a failing pip.
type exitError struct {
	code int
	msg  string
}

func (e *exitError) Error() string { return e.msg }

func fail(format string, args ...any) error {
	return &exitError{2, "error: " + fmt.Sprintf(format, args...)}
}

func notImitated(format string, args ...any) error {
	return &exitError{3, "uv stand-in: " + fmt.Sprintf(format, args...) + " is valid uv but not imitated here"}
}

func main() {
	record(os.Args[1:])
	err := run(os.Args[1:])
	if err == nil {
		return
	}
	var ee *exitError
	if errors.As(err, &ee) {
		fmt.Fprintln(os.Stderr, ee.msg)
		os.Exit(ee.code)
	}
	fmt.Fprintln(os.Stderr, "error:", err)
	os.Exit(2)
}

// record appends the call to $UV_STANDIN_LOG.
func record(args []string) {
	path := os.Getenv("UV_STANDIN_LOG")
	if path == "" {
		return
	}
	env := map[string]string{}
	for _, kv := range os.Environ() {
		k, v, _ := strings.Cut(kv, "=")
		if strings.HasPrefix(k, "UV_") || strings.HasPrefix(k, "PIP_") || k == "VIRTUAL_ENV" || k == "CONDA_PREFIX" || k == "PYTHONPATH" {
			env[k] = v
		}
	}
	wd, _ := os.Getwd()
	line, _ := json.Marshal(map[string]any{"argv": args, "dir": wd, "env": env})
	f, err := os.OpenFile(path, os.O_APPEND|os.O_CREATE|os.O_WRONLY, 0o644)
	if err != nil {
		return
	}
	f.Write(append(line, '\n'))
	f.Close()
}

func run(args []string) error {
	p, err := parse(args)
	if err != nil {
		return err
	}
	if p.has("help") {
		return notImitated("--help")
	}
	if err := p.validate(); err != nil {
		return err
	}
	switch p.cmd {
	case "":
		if p.has("version") {
			fmt.Println(version)
			return nil
		}
		return fail("'uv' requires a subcommand but one was not provided")
	case "venv":
		return cmdVenv(p)
	case "pip install", "pip uninstall", "pip freeze", "pip list":
		return cmdPip(p)
	case "sync":
		_, err := sync(p)
		return err
	case "run":
		return cmdRun(p)
	}
	return notImitated("uv %s", p.cmd)
}
