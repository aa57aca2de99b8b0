package main

import (
	"reflect"
	"strings"
	"testing"
)

func dockerFixedLookup(vars map[string]string) dockerTemplateLookup {
	return func(name string) (string, bool) { v, ok := vars[name]; return v, ok }
}

func TestRenderDockerArgs(t *testing.T) {
	lookup := dockerFixedLookup(map[string]string{
		"CLEARML_TASK.id": "t1", "CLEARML_TASK.name": "my task; rm -rf /", "CLEARML_TASK.project": "p1",
		"CLEARML_TASK.hyperparams.General.lr.value": "0.1", "CLEARML_QUEUE_NAME": "gpu queue",
		"CLEARML_WORKER_ID": "host:gpu0", "CLEARML_TASK.tags": "a,b", "CLEARML_TASK.comment": "two\nlines\r\n",
		"CLEARML_CONFIG.api.credentials.secret_key": "the-secret", "CLEARML_TASK.hyperparams.General.flag.value": "--privileged",
	})
	args := []string{"-e", "TASK=${CLEARML_TASK.id}", "-e", "NAME=${CLEARML_TASK.name}", "--label=q=${CLEARML_QUEUE_NAME}",
		"-e", "LR=${CLEARML_TASK.hyperparams.General.lr.value:0.5}", "-e", "BS=${CLEARML_TASK.hyperparams.General.bs.value:32}",
		"-e", "W=$CLEARML_WORKER_ID", "-e", "T=${CLEARML_TASK.tags}", "-e", "C=${CLEARML_TASK.comment}",
		"-e", "HOME=$HOME", "-e", "P=$$CLEARML_X", "-e", "K=${CLEARML_CONFIG.api.credentials.secret_key}",
		"-e", "U=${CLEARML_TASK.nope}", "${CLEARML_TASK.hyperparams.General.flag.value}", "-v", "/data/${CLEARML_TASK.project}:/data"}
	out, templated, notes := renderDockerArgs(args, lookup, true)
	want := []string{"-e", "TASK=t1", "-e", "NAME=my task; rm -rf /", "--label=q=gpu queue",
		"-e", "LR=0.1", "-e", "BS=32", "-e", "W=host:gpu0", "-e", "T=a,b", "-e", "C=twolines",
		"-e", "HOME=$HOME", "-e", "P=$CLEARML_X", "-e", "K=${CLEARML_CONFIG.api.credentials.secret_key}",
		"-e", "U=${CLEARML_TASK.nope}", "--privileged", "-v", "/data/p1:/data"}
	if !reflect.DeepEqual(out, want) {
		t.Errorf("rendered:\n%q\nwant\n%q", out, want)
	}
	if len(out) != len(args) {
		t.Errorf("the argument count changed")
	}
	var changed []int
	for i, c := range templated {
		if c {
			changed = append(changed, i)
		}
	}
	if want := []int{1, 3, 4, 6, 8, 10, 12, 14, 18, 23, 25}; !reflect.DeepEqual(changed, want) {
		t.Errorf("templated %v, want %v", changed, want)
	}
	if len(notes) != 2 || !strings.Contains(notes[0].Text, "cannot read CONFIG") || !strings.Contains(notes[1].Text, "${CLEARML_TASK.nope:default}") {
		t.Errorf("notes %+v", notes)
	}
	// A templated value is one argument: the policy then sees "--privileged" as an option and refuses it.
	_, refused := checkDockerArgs(out[len(out)-3:], dockerArgPolicy{})
	if len(refused) != 1 || refused[0].Opt.Name != "privileged" {
		t.Errorf("refused %+v", refused)
	}
	// The operator's own arguments may read the configuration.
	out, _, notes = renderDockerArgs([]string{"-e", "K=${CLEARML_CONFIG.api.credentials.secret_key}"}, lookup, false)
	if out[1] != "K=the-secret" || len(notes) != 0 {
		t.Errorf("operator arguments: %q %+v", out, notes)
	}
	// Unterminated and foreign variables stay as they are.
	out, templated, _ = renderDockerArgs([]string{"${CLEARML_TASK.id", "$", "a$", "${OTHER}CLEARML_"}, lookup, true)
	if !reflect.DeepEqual(out, []string{"${CLEARML_TASK.id", "$", "a$", "${OTHER}CLEARML_"}) || templated[0] || templated[3] {
		t.Errorf("left alone: %q %v", out, templated)
	}
}
