package main

import (
	"strings"
	"testing"
)

func TestLinePrefixer(t *testing.T) {
	var b strings.Builder
	l := &linePrefixer{w: &b, prefix: []byte("RANK 1: ")}
	for _, w := range []string{"a\nb", "c\n", "", "\n\nd\n"} {
		l.Write([]byte(w))
	}
	if want := "RANK 1: a\nRANK 1: bc\nRANK 1: \nRANK 1: \nRANK 1: d\n"; b.String() != want {
		t.Errorf("%q, want %q", b.String(), want)
	}
}

// A rank > 0 of a multi-node run: CLEARML_MULTI_NODE_SINGLE_TASK=1 ships
// its console prefixed with its rank, -1 keeps it off the server.
func TestExecuteMultiNodeConsole(t *testing.T) {
	s := startServer(t)
	repo, _ := makeTaskRepo(t, map[string]string{"train.py": "print('from rank one')\n"})
	for _, tc := range []struct{ mode, want, absent string }{
		{"1", "RANK 1: from rank one", ""},
		{"-1", "", "from rank one"},
	} {
		id := addScriptTask(s, repo, "train.py")
		s.SetTaskStatus(id, "in_progress", "rank 0 has it")
		env := executeEnv(t, s)
		env["SLURM_PROCID"] = "1"
		env["CLEARML_MULTI_NODE_SINGLE_TASK"] = tc.mode
		r := runAgent(t, env, "execute", "--id", id)
		log := s.TaskLogText(id)
		if r.code != 0 || !strings.Contains(r.stdout, "from rank one") || tc.want != "" && !strings.Contains(log, tc.want) ||
			tc.absent != "" && strings.Contains(log, tc.absent) {
			t.Errorf("mode %s: exit %d; console:\n%s\nstdout:\n%s%s", tc.mode, r.code, log, r.stdout, r.stderr)
		}
	}
}
