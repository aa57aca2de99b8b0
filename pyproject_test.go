package main

import (
	"reflect"
	"strings"
	"testing"
)

func TestPoetryShowToFreeze(t *testing.T) {
	out := "certifi            2023.7.22 Python package for providing Mozilla's CA Bundle.\nvenvdemo           1.0\nrequests (!) 2.31.0 Python HTTP for Humans.\n\n  \n"
	want := []string{"certifi==2023.7.22 # Python package for providing Mozilla's CA Bundle.", "venvdemo==1.0", "requests==2.31.0 # Python HTTP for Humans."}
	if got := poetryShowToFreeze(out); !reflect.DeepEqual(got, want) {
		t.Errorf("got %q, want %q", got, want)
	}
}

func TestUVArgs(t *testing.T) {
	o := uvOptions{LockExists: true, SyncLocked: true, SyncExtraArgs: []string{"--all-extras"}, RunExtraArgs: []string{"--all-extras"},
		ExtraIndexURLs: []string{"https://download.pytorch.org/whl/cu121/"}, VenvsDir: "/v", DownloadCache: "/d"}
	if got := uvSyncArgs(o, true); !reflect.DeepEqual(got, []string{"sync", "--locked", "--all-extras", "--extra-index-url", "https://download.pytorch.org/whl/cu121/"}) {
		t.Errorf("sync: %q", got)
	}
	if got := uvSyncArgs(o, false); got[1] != "--all-extras" {
		t.Errorf("the retry without --locked: %q", got)
	}
	o2 := o
	o2.SyncLocked = false
	if got := uvSyncArgs(o2, true); got[1] == "--locked" {
		t.Errorf("uv_sync_locked_if_lock_file false: %q", got)
	}
	if got := uvRunArgs(o, "/p/.venv/bin/python", []string{"-u", "main.py", "--x"}); !reflect.DeepEqual(got, []string{"run", "--all-extras", "--python", "/p/.venv/bin/python", "python", "-u", "main.py", "--x"}) {
		t.Errorf("run: %q", got)
	}
	if got := uvPipArgs("/v/bin/python", []string{"pip", "install", "-r", "f.txt"}); !reflect.DeepEqual(got, []string{"pip", "install", "--python", "/v/bin/python", "-r", "f.txt"}) {
		t.Errorf("pip: %q", got)
	}
	if got := uvPipArgs("/v/bin/python", []string{"pip", "freeze"}); !reflect.DeepEqual(got, []string{"pip", "freeze", "--python", "/v/bin/python"}) {
		t.Errorf("pip freeze: %q", got)
	}
	env := func(m map[string]string) func(string) (string, bool) {
		return func(k string) (string, bool) { v, ok := m[k]; return v, ok }
	}
	o.UnsafeBestMatch = true
	set, unset, note := uvEnv(o, []string{"sync"}, false, env(map[string]string{"VIRTUAL_ENV": "/x"}))
	if set["UV_INDEX_STRATEGY"] != "unsafe-best-match" || set["UV_CACHE_DIR"] != "/v" || len(unset) != 3 || note != "" {
		t.Errorf("sync env: %v %v %q", set, unset, note)
	}
	set, unset, note = uvEnv(o, []string{"pip", "install", "--index-strategy=first-index"}, false, env(nil))
	if _, ok := set["UV_INDEX_STRATEGY"]; ok || set["UV_CACHE_DIR"] != "/d" || unset != nil || note == "" {
		t.Errorf("pip env: %v %v %q", set, unset, note)
	}
	set, _, note = uvEnv(o, []string{"run"}, true, env(map[string]string{"UV_INDEX_STRATEGY": "first-index", "UV_CACHE_DIR": "/mine"}))
	if len(set) != 0 || !strings.Contains(note, "already set to 'first-index'") {
		t.Errorf("env with the user's variables: %v %q", set, note)
	}
	if !reflect.DeepEqual(pyProjectFiles("uv"), []string{"pyproject.toml", "uv.lock"}) || pyProjectFiles("poetry")[1] != "poetry.lock" {
		t.Error("indicator files")
	}
}
