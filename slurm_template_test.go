package main

import (
	"context"
	"errors"
	"hash/crc32"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// slurmFixedLookup answers every name from vars; unknown otherwise.
func slurmFixedLookup(vars map[string]string) slurmLookup {
	return func(name string) (slurmValue, bool) {
		v, ok := vars[name]
		return slurmValue{Text: v}, ok
	}
}

func TestSlurmTemplateRendersEachContext(t *testing.T) {
	vars := map[string]string{"CLEARML_TASK.name": "it's a \"test\" $x", "CLEARML_TASK.id": "abc123"}
	cases := []struct{ name, tmpl, want string }{
		{"no variables", "#!/bin/bash\necho ${HOME} $CLEARML_X\n", "#!/bin/bash\necho ${HOME} $CLEARML_X\n"},
		{"unquoted", "echo ${CLEARML_TASK.name}", `echo 'it'\''s a "test" $x'`},
		{"concatenated", "out=task-${CLEARML_TASK.id}.log", "out=task-'abc123'.log"},
		{"double quotes", `echo "name: ${CLEARML_TASK.name}!"`, `echo "name: it's a \"test\" \$x!"`},
		{"single quotes", `echo 'name: ${CLEARML_TASK.name}'`, `echo 'name: it'\''s a "test" $x'`},
		{"in $()", `echo "$(basename ${CLEARML_TASK.id})"`, `echo "$(basename 'abc123')"`},
		{"sbatch line", "#SBATCH --job-name=clearml_task_${CLEARML_TASK.id} --comment=${CLEARML_TASK.name}",
			"#SBATCH --job-name=clearml_task_abc123 --comment=it_s_a__test___x"},
		{"comment", "echo a # ${CLEARML_TASK.name}\necho ${CLEARML_TASK.id}", "echo a # it_s_a__test___x\necho 'abc123'"},
		{"default used", "#SBATCH --nodes=${CLEARML_TASK.hyperparams.properties.num_nodes.value:1}", "#SBATCH --nodes=1"},
		{"default unused", "echo ${CLEARML_TASK.id:zzz}", "echo 'abc123'"},
		{"empty default", "echo x${CLEARML_QUEUE_NAME:}", "echo x''"},
		{"escaped is literal", `echo \${CLEARML_TASK.id} "\${CLEARML_TASK.id}"`, `echo \${CLEARML_TASK.id} "\${CLEARML_TASK.id}"`},
		{"hash mid-word is not a comment", "echo a#${CLEARML_TASK.id}", "echo a#'abc123'"},
		{"option-looking value in a directive", "#SBATCH --job-name ${CLEARML_TASK.x:--uid=0}", "#SBATCH --job-name _-uid=0"},
		{"after here-document", "cat <<'EOF'\n$(date) ${HOME}\nEOF\necho ${CLEARML_TASK.id}", "cat <<'EOF'\n$(date) ${HOME}\nEOF\necho 'abc123'"},
		{"here-string", "cat <<< ${CLEARML_TASK.id}", "cat <<< 'abc123'"},
		{"shell expansions before", `n=${SLURM_NNODES:-1}; m=$((n * 2)); echo "${CLEARML_TASK.id}"`, `n=${SLURM_NNODES:-1}; m=$((n * 2)); echo "abc123"`},
		{"case at top level", "case ${CLEARML_TASK.id} in a*) echo ${CLEARML_TASK.id};; esac", "case 'abc123' in a*) echo 'abc123';; esac"},
		{"dollar in single quotes", "echo '$${CLEARML_TASK.id}'", "echo '$abc123'"},
		{"string test", `[[ "${CLEARML_TASK.id}" == abc* ]] && echo y`, `[[ "abc123" == abc* ]] && echo y`},
	}
	for _, c := range cases {
		got, err := renderSlurmTemplate(c.tmpl, slurmFixedLookup(vars))
		if err != nil {
			t.Errorf("%s: %v", c.name, err)
			continue
		}
		if got != c.want {
			t.Errorf("%s:\n got %q\nwant %q", c.name, got, c.want)
		}
	}
}

func TestSlurmTemplateErrors(t *testing.T) {
	vars := map[string]string{"CLEARML_TASK.id": "abc"}
	cases := []struct{ name, tmpl, want, variable string }{
		{"unknown", "#!/bin/bash\n\necho ${CLEARML_TASK.hyperparams.Args.lr.value}", "line 3: unknown variable ${CLEARML_TASK.hyperparams.Args.lr.value} and no default", "CLEARML_TASK.hyperparams.Args.lr.value"},
		{"unknown glue name", "echo ${CLEARML_AGENT__AGENT__VENVS_DIR}", "a shell variable is written $CLEARML_AGENT__AGENT__VENVS_DIR", "CLEARML_AGENT__AGENT__VENVS_DIR"},
		{"unterminated", "echo a\necho ${CLEARML_TASK.id\n", "line 2: unterminated variable", ""},
		{"bad name", "echo ${CLEARML_task.id}", "bad variable name", "CLEARML_task.id"},
		{"arithmetic", "echo $(( ${CLEARML_TASK.id} + 1 ))", "inside an arithmetic expression", "CLEARML_TASK.id"},
		{"arith command", "(( ${CLEARML_TASK.id} > 1 ))", "inside an arithmetic expression", "CLEARML_TASK.id"},
		{"old arith", "echo $[ ${CLEARML_TASK.id} ]", "inside an arithmetic expression", "CLEARML_TASK.id"},
		{"arith test", "if [[ ${CLEARML_TASK.id} -gt 1 ]]; then :; fi", "[[ ]] test with an arithmetic comparison", "CLEARML_TASK.id"},
		{"arith test quoted", `[[ "${CLEARML_TASK.id}" -eq 1 ]]`, "[[ ]] test with an arithmetic comparison", "CLEARML_TASK.id"},
		{"subscript", "a[${CLEARML_TASK.id}]=1", "inside an array subscript", "CLEARML_TASK.id"},
		{"subscript quoted", `a["${CLEARML_TASK.id}"]=1`, "inside an array subscript", "CLEARML_TASK.id"},
		{"shell param", "echo ${X:-${CLEARML_TASK.id}}", "inside a shell ${...} expansion", "CLEARML_TASK.id"},
		{"backticks", "echo `echo ${CLEARML_TASK.id}`", "inside `...`", "CLEARML_TASK.id"},
		{"ansi", "echo $'${CLEARML_TASK.id}'", "inside $'...'", "CLEARML_TASK.id"},
		{"eval", "eval echo ${CLEARML_TASK.id}", "an argument of eval", "CLEARML_TASK.id"},
		{"eval quoted", `x=1 eval "echo ${CLEARML_TASK.id}"`, "an argument of eval", "CLEARML_TASK.id"},
		{"let", "let x=${CLEARML_TASK.id}", "an argument of let", "CLEARML_TASK.id"},
		{"here-document", "cat <<EOF\nid: ${CLEARML_TASK.id}\nEOF", "line 2: ${CLEARML_TASK.id} is inside a here-document", "CLEARML_TASK.id"},
		{"quoted here-document", "cat <<-'EOF'\n\tid: ${CLEARML_TASK.id}\n\tEOF", "inside a here-document", "CLEARML_TASK.id"},
		{"case in $()", "x=$(case a in a) echo a;; esac)\necho ${CLEARML_TASK.id}", "after a case statement inside $(...)", "CLEARML_TASK.id"},
		{"after a dollar", "echo $${CLEARML_TASK.id}", "right after a $", "CLEARML_TASK.id"},
		{"after a dollar in quotes", `echo "$${CLEARML_TASK.id}"`, "right after a $", "CLEARML_TASK.id"},
		{"quote in param", "echo \"${X:-'}\" ${CLEARML_TASK.id}", "after a quote inside a shell ${...}", "CLEARML_TASK.id"},
	}
	for _, c := range cases {
		_, err := renderSlurmTemplate(c.tmpl, slurmFixedLookup(vars))
		var te *slurmTemplateError
		if !errors.As(err, &te) {
			t.Errorf("%s: got %v, want a template error", c.name, err)
			continue
		}
		if !strings.Contains(err.Error(), c.want) || te.Var != c.variable {
			t.Errorf("%s: got %q (var %q), want %q (var %q)", c.name, err, te.Var, c.want, c.variable)
		}
	}
}

func TestSlurmTemplateScriptVariables(t *testing.T) {
	lookup := func(name string) (slurmValue, bool) {
		switch name {
		case "CLEARML_AGENT_EXECUTE":
			return slurmValue{Text: "/opt/clearml-agent execute --id 'abc'", Script: true}, true
		case "CLEARML_PRE_SETUP", "CLEARML_POST_SETUP":
			return slurmValue{Text: "echo setup\necho more", Script: true}, true
		case "CLEARML_TASK.container.arguments":
			return slurmValue{Multi: true, Words: []string{"--ipc=host", "-e", "A=b c"}}, true
		}
		return slurmValue{}, false
	}
	got, err := renderSlurmTemplate("${CLEARML_PRE_SETUP}\nsrun singularity exec ${CLEARML_TASK.container.arguments} ${CLEARML_AGENT_EXECUTE}\n${CLEARML_POST_SETUP}\n", lookup)
	want := "echo setup\necho more\nsrun singularity exec '--ipc=host' '-e' 'A=b c' /opt/clearml-agent execute --id 'abc'\necho setup\necho more\n"
	if err != nil || got != want {
		t.Fatalf("got %q, %v\nwant %q", got, err, want)
	}
	for _, tmpl := range []string{`echo "${CLEARML_AGENT_EXECUTE}"`, "#SBATCH ${CLEARML_PRE_SETUP}", "echo '${CLEARML_POST_SETUP}'"} {
		if _, err := renderSlurmTemplate(tmpl, lookup); err == nil || !strings.Contains(err.Error(), "is shell code") {
			t.Errorf("%s: got %v, want the shell-code error", tmpl, err)
		}
	}
	got, _ = renderSlurmTemplate(`echo "${CLEARML_TASK.container.arguments}"`, lookup)
	if got != `echo "--ipc=host -e A=b c"` {
		t.Errorf("arguments in quotes: %q", got)
	}
}

// The documented templates (clearml-docs: Slurm native, Pyxis, Singularity)
// render as they are.
func TestSlurmTemplateDocumentedExamples(t *testing.T) {
	task := map[string]any{
		"id": "4f2a", "name": "train", "project": "p1",
		"container":   map[string]any{"image": "docker://nvcr.io/nvidia/pytorch:24.01-py3", "arguments": "--ipc=host"},
		"hyperparams": map[string]any{"properties": map[string]any{"num_nodes": map[string]any{"value": "2"}}},
	}
	vars := map[string]slurmValue{
		"CLEARML_PRE_SETUP":     {Text: "# pre", Script: true},
		"CLEARML_AGENT_EXECUTE": {Text: "clearml-agent execute --id 4f2a", Script: true},
		"CLEARML_POST_SETUP":    {Text: "# post", Script: true},
	}
	for _, name := range []string{"native", "pyxis", "pyxis_srun", "singularity"} {
		tmpl, err := os.ReadFile(filepath.Join("testdata", "slurm", "templates", name+".sh"))
		if err != nil {
			t.Fatal(err)
		}
		got, err := renderSlurmTemplate(string(tmpl), slurmTaskLookup(task, vars))
		if err != nil {
			t.Errorf("%s: %v", name, err)
			continue
		}
		for _, want := range []string{"#SBATCH --job-name=clearml_task_4f2a", "#SBATCH --nodes=2"} {
			if !strings.Contains(got, want+" ") && !strings.Contains(got, want+"\n") {
				t.Errorf("%s: no %q in\n%s", name, want, got)
			}
		}
		if name == "pyxis" && !strings.Contains(got, "#SBATCH --container-image=docker://nvcr.io/nvidia/pytorch:24.01-py3\n") {
			t.Errorf("pyxis: image line missing:\n%s", got)
		}
		if name == "pyxis_srun" && !strings.Contains(got, `--container-image="docker://nvcr.io/nvidia/pytorch:24.01-py3"`) {
			t.Errorf("pyxis_srun: image argument missing:\n%s", got)
		}
	}
}

func TestSlurmTaskLookup(t *testing.T) {
	task := map[string]any{
		"id": "t1", "name": "n",
		"hyperparams": map[string]any{
			"Args":       map[string]any{"model.lr": map[string]any{"value": "0.1"}, "epochs": map[string]any{"value": 3.0}},
			"properties": map[string]any{"flag": map[string]any{"value": true}},
		},
		"tags":      []any{"a", "b"},
		"container": map[string]any{"arguments": "--ipc=host -e 'A=b c'"},
	}
	look := slurmTaskLookup(task, map[string]slurmValue{"CLEARML_QUEUE_NAME": {Text: "q"}})
	for name, want := range map[string]string{
		"CLEARML_TASK.id": "t1", "CLEARML_TASK.hyperparams.Args.model.lr.value": "0.1",
		"CLEARML_TASK.hyperparams.Args.epochs.value": "3", "CLEARML_TASK.hyperparams.properties.flag.value": "true",
		"CLEARML_QUEUE_NAME": "q",
	} {
		if v, ok := look(name); !ok || v.Text != want {
			t.Errorf("%s: %+v %v, want %q", name, v, ok, want)
		}
	}
	if v, ok := look("CLEARML_TASK.container.arguments"); !ok || !v.Multi || strings.Join(v.Words, "|") != "--ipc=host|-e|A=b c" {
		t.Errorf("arguments: %+v", v)
	}
	if v, ok := look("CLEARML_TASK.tags"); !ok || strings.Join(v.Words, "|") != "a|b" {
		t.Errorf("tags: %+v", v)
	}
	for _, name := range []string{"CLEARML_TASK.hyperparams.Args.nope.value", "CLEARML_TASK.hyperparams", "CLEARML_WORKER_ID"} {
		if v, ok := look(name); ok {
			t.Errorf("%s: got %+v, want unknown", name, v)
		}
	}
}

// slurmHostileValues are task names and parameters that try to get out of
// their quotes.
var slurmHostileValues = []string{
	"$(touch CANARY/dollar)", "`touch CANARY/backtick`", "'; touch CANARY/single; '", `"; touch CANARY/double; "`,
	"x\ntouch CANARY/newline\n", "a;touch CANARY/semi", "nul\x00byte;touch CANARY/nul", `\'; touch CANARY/bs; '\`,
	"'\"'\"'$(touch CANARY/mixed)'\"'\"'", "x\n#SBATCH --wrap=touch CANARY/wrap", "--export=ALL,LD_PRELOAD=/x",
	"${IFS}$(touch${IFS}CANARY/ifs)", "a[$(touch CANARY/subscript)]", "\r\ntouch CANARY/crlf", "\xff\xfe$(touch CANARY/bad)",
	"EOF\ntouch CANARY/eof\nEOF", "}${CLEARML_TASK.id}", "*", "~", "-n", "", "Ünïcode ✓",
}

// slurmProbe prints the value as it arrives in each quoting context,
// NUL-separated, when run by bash.
const slurmProbe = "#!/bin/bash\n#SBATCH --job-name=${CLEARML_TASK.name}\n" +
	"printf '%s\\0' ${CLEARML_TASK.name} \"${CLEARML_TASK.name}\" '${CLEARML_TASK.name}' " +
	"\"$(printf '%s' ${CLEARML_TASK.name})\" pre${CLEARML_TASK.name}post \"a'b${CLEARML_TASK.name}\" # ${CLEARML_TASK.name}\n" +
	"N=${CLEARML_TASK.name}\nprintf '%s\\0' \"$N\"\n"

// slurmProbeWant is what slurmProbe prints for v.
func slurmProbeWant(v string) []string {
	v = strings.ToValidUTF8(strings.ReplaceAll(v, "\x00", ""), "\uFFFD")
	cmdsub := strings.TrimRight(v, "\n") // $(...) drops trailing newlines
	return []string{v, v, v, cmdsub, "pre" + v + "post", "a'b" + v, v}
}

// runSlurmProbe renders slurmProbe for v and runs it with bash; it returns
// the printed fields, and fails the test if anything was injected.
func runSlurmProbe(t testing.TB, v string) {
	canary := t.TempDir()
	v = strings.ReplaceAll(v, "CANARY", canary)
	script, err := renderSlurmTemplate(slurmProbe, slurmFixedLookup(map[string]string{"CLEARML_TASK.name": v}))
	if err != nil {
		t.Fatalf("%q: %v", v, err)
	}
	// sbatch reads directives up to the first line that is neither blank nor
	// a comment: the probe's two must stay two, the value one word.
	lines := strings.Split(script, "\n")
	if !strings.HasPrefix(lines[1], "#SBATCH --job-name=") || strings.ContainsAny(lines[1][len("#SBATCH --job-name="):], " \t'\"\\#") ||
		strings.HasPrefix(lines[2], "#") || strings.TrimSpace(lines[2]) == "" {
		t.Errorf("%q: the directives changed:\n%s", v, script)
	}
	cmd := exec.Command("bash", "-c", script)
	cmd.Dir = canary
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("%q: bash: %v\n%s", v, err, script)
	}
	got := strings.Split(strings.TrimSuffix(string(out), "\x00"), "\x00")
	want := slurmProbeWant(v)
	if strings.Join(got, "\x00") != strings.Join(want, "\x00") {
		t.Errorf("value %q arrived as %q, want %q\nscript:\n%s", v, got, want, script)
	}
	if entries, _ := os.ReadDir(canary); len(entries) > 0 {
		t.Errorf("value %q injected a command: %s exists\nscript:\n%s", v, entries[0].Name(), script)
	}
}

func TestSlurmTemplateHostileValuesInBash(t *testing.T) {
	if _, err := exec.LookPath("bash"); err != nil {
		t.Skip("bash not found")
	}
	for _, v := range slurmHostileValues {
		runSlurmProbe(t, v)
	}
}

// slurmTokens build shell-like templates from harmless pieces: whatever they
// form, only an injected value could create a file.
var slurmTokens = []string{
	" ", "\n", "echo ", "printf '%s\\n' ", "\"", "'", "$(", ")", "`", "${HOME}", "$HOME", "#", "# ", ";", "&&", "|",
	"\\", "${CLEARML_TASK.name}", " ${CLEARML_TASK.name} ", "${CLEARML_TASK.name:d}", "<<E\n", "<<'E'\n", "<<-E\n",
	"\nE\n", "case ", " in ", "a) ", ";; ", "esac", "[[ ", " ]]", " == ", " -eq ", "((", "))", "$((", "$[", "]",
	"{ ", " }", "(", "a", "=", "x=", "$'", "${X:-", "}", "<<<", "#SBATCH --job-name=", "a[", "$", "\t",
}

// slurmInjections are values that try to create a file in CANARY.
var slurmInjections = []string{
	"$(touch CANARY/a)", "`touch CANARY/b`", "';touch CANARY/c;'", "\";touch CANARY/d;\"", "\ntouch CANARY/e\n",
	"\\';touch CANARY/f;'", "E\ntouch CANARY/g\nE", "a[$(touch CANARY/h)]", "}; touch CANARY/i; {", ")\ntouch CANARY/j\n(",
	"\\\";touch CANARY/k;\"", "'\"$(touch CANARY/l)\"'", "x]=1; touch CANARY/m; a[",
}

// slurmGenTemplate turns bytes into a template of slurmTokens.
func slurmGenTemplate(b []byte) string {
	var sb strings.Builder
	for _, c := range b {
		sb.WriteString(slurmTokens[int(c)%len(slurmTokens)])
	}
	return sb.String()
}

// runSlurmGenerated renders a generated template with an injection and, if
// it renders, runs it with bash: no file may appear.
func runSlurmGenerated(t testing.TB, tokens []byte, injection int) {
	tmpl := slurmGenTemplate(tokens)
	canary := t.TempDir()
	value := strings.ReplaceAll(slurmInjections[injection%len(slurmInjections)], "CANARY", canary)
	script, err := renderSlurmTemplate(tmpl, slurmFixedLookup(map[string]string{"CLEARML_TASK.name": value}))
	if err != nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, "bash", "--norc", "--noprofile", "-c", script)
	cmd.Dir = t.TempDir()
	cmd.Env = []string{"PATH=/usr/bin:/bin", "HOME=" + cmd.Dir}
	cmd.Run()
	if entries, _ := os.ReadDir(canary); len(entries) > 0 {
		t.Fatalf("value %q injected a command (%s exists)\ntemplate: %q\nscript: %q", value, entries[0].Name(), tmpl, script)
	}
}

var slurmGenN = 400

// Random templates of shell pieces, each with each injection, run in bash.
func TestSlurmTemplateGeneratedScriptsInBash(t *testing.T) {
	if _, err := exec.LookPath("bash"); err != nil {
		t.Skip("bash not found")
	}
	rng := rand.New(rand.NewPCG(1, 2))
	rendered := 0
	for i := 0; i < slurmGenN; i++ {
		tokens := make([]byte, 3+rng.IntN(12))
		for j := range tokens {
			tokens[j] = byte(rng.IntN(256))
		}
		if _, err := renderSlurmTemplate(slurmGenTemplate(tokens), slurmFixedLookup(map[string]string{"CLEARML_TASK.name": "v"})); err == nil {
			rendered++
		}
		runSlurmGenerated(t, tokens, i)
	}
	t.Logf("%d of %d rendered", rendered, slurmGenN)
	if rendered < slurmGenN/4 {
		t.Errorf("only %d of %d generated templates rendered: the generator tests little", rendered, slurmGenN)
	}
}

// slurmShlexProbe is a line whose words Python-style shlex splitting (an
// oracle independent of the renderer) must see as these seven.
const slurmShlexProbe = "printf '%s' ${CLEARML_TASK.name} \"${CLEARML_TASK.name}\" '${CLEARML_TASK.name}' pre${CLEARML_TASK.name}post \"a'b${CLEARML_TASK.name}\" #${CLEARML_TASK.name}"

func checkSlurmShlex(t *testing.T, value string) {
	out, err := renderSlurmTemplate(slurmShlexProbe, slurmFixedLookup(map[string]string{"CLEARML_TASK.name": value}))
	if err != nil {
		t.Fatal(err)
	}
	cut := strings.LastIndex(out, " #")
	code, comment := out[:cut], out[cut+2:]
	words, err := shlexSplit(code)
	v := strings.ToValidUTF8(strings.ReplaceAll(value, "\x00", ""), "\uFFFD")
	want := []string{"printf", "%s", v, v, v, "pre" + v + "post", "a'b" + v}
	if err != nil || strings.Join(words, "\x00") != strings.Join(want, "\x00") {
		t.Fatalf("value %q: the line splits into %q (%v), want %q\nline: %q", value, words, err, want, out)
	}
	if comment != slurmDirectiveSafe(v, false) {
		t.Fatalf("value %q: comment %q", value, comment)
	}
}

// FuzzRenderSlurmTemplate: any template renders or fails without a panic,
// a template without variables comes back unchanged, and any value lands
// literally in every quoting context (shlex sees the right words; for one
// input in eight, bash runs the probe and a template of shell pieces chosen
// by the value's bytes, and nothing gets injected). Fuzzed templates
// themselves are never run.
func FuzzRenderSlurmTemplate(f *testing.F) {
	for _, v := range slurmHostileValues {
		f.Add(slurmProbe, v)
	}
	f.Add("#SBATCH --x=${CLEARML_TASK.id:1}\ncat <<EOF\n${HOME}\nEOF\necho \"$(case a in a) ${CLEARML_TASK.id};; esac)\"", "v")
	f.Add("a=$(( ${n} + 1 )); echo ${CLEARML_QUEUE_NAME}; `x` ${x:-'a'} $'b' <<-E\n\tE\n", "'")
	_, haveBash := exec.LookPath("bash")
	f.Fuzz(func(t *testing.T, tmpl, value string) {
		lookup := func(name string) (slurmValue, bool) {
			return slurmValue{Text: value, Script: name == "CLEARML_AGENT_EXECUTE"}, name != "CLEARML_UNKNOWN"
		}
		out, err := renderSlurmTemplate(tmpl, lookup)
		var te *slurmTemplateError
		if err != nil && !errors.As(err, &te) {
			t.Fatalf("error of the wrong type: %v", err)
		}
		if te != nil && te.Line < 1 {
			t.Fatalf("error without a line: %v", err)
		}
		if !strings.Contains(tmpl, "${CLEARML_") && (err != nil || out != tmpl) {
			t.Fatalf("a template without variables changed: %q -> %q, %v", tmpl, out, err)
		}
		checkSlurmShlex(t, value)
		// bash costs milliseconds: one input in eight, chosen by its bytes.
		if haveBash != nil || crc32.ChecksumIEEE([]byte(tmpl+value))%8 != 0 {
			return
		}
		if !strings.Contains(value, "CANARY") {
			runSlurmProbe(t, value)
		}
		if len(value) > 1 && len(value) < 40 {
			runSlurmGenerated(t, []byte(value[1:]), int(value[0]))
		}
	})
}
