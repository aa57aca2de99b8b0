package main

// Poetry and uv projects (issue 13, part 3): the pure parts of the
// reference's poetry_api.py and uv_api.py, so the venv code can plug them
// in. See py-design.md for the commands, flags and variables.

import "strings"

// poetryShowToFreeze turns `poetry show` ("name version description") into
// requirement lines for tasks.set_requirements, as the reference's
// PoetryAPI.freeze ("name==version # description").
func poetryShowToFreeze(out string) []string {
	var lines []string
	for _, l := range strings.Split(out, "\n") {
		f := strings.Fields(l)
		if len(f) > 2 && f[1] == "(!)" { // listed in the lock, not installed
			f = append(f[:1], f[2:]...)
		}
		if len(f) < 2 {
			continue
		}
		line := f[0] + "==" + f[1]
		if len(f) > 2 {
			line += " # " + strings.Join(f[2:], " ")
		}
		lines = append(lines, line)
	}
	return lines
}

// uvOptions is what the reference's uv mode reads (agent.package_manager.*).
type uvOptions struct {
	LockExists      bool     // uv.lock in the project folder
	SyncLocked      bool     // uv_sync_locked_if_lock_file (default true)
	SyncExtraArgs   []string // uv_sync_extra_args
	RunExtraArgs    []string // uv_run_extra_args
	ExtraIndexURLs  []string // extra_index_url, then the PyTorch index: every sync gets them
	UnsafeBestMatch bool     // uv_unsafe_best_match
	VenvsDir        string   // agent.venvs_dir: UV_CACHE_DIR once a sync ran (the reference's choice)
	DownloadCache   string   // agent.pip_download_cache.path: UV_CACHE_DIR before that
}

// uvSyncArgs is `uv sync` as the reference runs it in the project folder:
// --locked when a uv.lock exists (and uv_sync_locked_if_lock_file), the
// extra arguments, then an --extra-index-url for each extra index. When a
// locked sync fails, the reference runs it once more without --locked.
func uvSyncArgs(o uvOptions, locked bool) []string {
	args := []string{"sync"}
	if locked && o.LockExists && o.SyncLocked {
		args = append(args, "--locked")
	}
	args = append(args, o.SyncExtraArgs...)
	for _, u := range o.ExtraIndexURLs {
		args = append(args, "--extra-index-url", u)
	}
	return args
}

// uvRunArgs is how the reference starts the task in a synced project:
// uv run [uv_run_extra_args] --python <project>/.venv/bin/python python ARGS,
// in the project folder.
func uvRunArgs(o uvOptions, venvPython string, pythonArgs []string) []string {
	args := append([]string{"run"}, o.RunExtraArgs...)
	args = append(args, "--python", venvPython, "python")
	return append(args, pythonArgs...)
}

// uvPipArgs puts --python VENV_PYTHON after the subcommand words of a uv
// call that is not a sync ("pip install -r f" -> "pip install --python P
// -r f"), as the reference does once it has made the task's venv.
func uvPipArgs(venvPython string, args []string) []string {
	i := 0
	for i < len(args) && !strings.HasPrefix(args[i], "-") && args[i] != "python" {
		i++
	}
	out := append(append([]string(nil), args[:i]...), "--python", venvPython)
	return append(out, args[i:]...)
}

// uvEnv is the environment change for a uv call: VIRTUAL_ENV, CONDA_PREFIX
// and PYTHONPATH go when an environment is active; UV_INDEX_STRATEGY is
// unsafe-best-match with uv_unsafe_best_match unless the variable or an
// --index-strategy argument is already there (a note says so); UV_CACHE_DIR,
// unless set, is the venvs folder once a sync has run, else the download
// cache. get looks the current environment up.
func uvEnv(o uvOptions, args []string, synced bool, get func(string) (string, bool)) (set map[string]string, unset []string, note string) {
	set = map[string]string{}
	_, venv := get("VIRTUAL_ENV")
	_, conda := get("CONDA_PREFIX")
	if venv || conda {
		unset = []string{"VIRTUAL_ENV", "CONDA_PREFIX", "PYTHONPATH"}
	}
	if o.UnsafeBestMatch {
		flagged := false
		for _, a := range args {
			flagged = flagged || strings.HasPrefix(a, "--index-strategy")
		}
		if v, ok := get("UV_INDEX_STRATEGY"); ok && v != "" {
			note = "skipping uv_unsafe_best_match, UV_INDEX_STRATEGY already set to '" + v + "'"
		} else if flagged {
			note = "skipping uv_unsafe_best_match, --index-strategy already passed to uv"
		} else {
			set["UV_INDEX_STRATEGY"] = "unsafe-best-match"
		}
	}
	if v, ok := get("UV_CACHE_DIR"); !ok || v == "" {
		dir := o.DownloadCache
		if synced || (len(args) > 0 && args[0] == "sync") {
			dir = o.VenvsDir
		}
		if dir != "" {
			set["UV_CACHE_DIR"] = dir
		}
	}
	return set, unset, note
}

// pyProjectFiles are the files that make a folder a Poetry or uv project
// for the reference (PoetryAPI / UvAPI INDICATOR_FILES).
func pyProjectFiles(tool string) []string {
	if tool == "uv" {
		return []string{"pyproject.toml", "uv.lock"}
	}
	return []string{"pyproject.toml", "poetry.lock"}
}
