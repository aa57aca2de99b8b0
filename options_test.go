package main

import (
	"flag"
	"slices"
	"strings"
	"testing"
)

// Every execute flag survives executeArgv and the parser: a flag added to
// taskOptions but not to the encoder would silently not reach the
// daemon's, docker's and build's child executes. The git credentials go
// by the environment instead, never in argv.
func TestExecuteArgvRoundTrip(t *testing.T) {
	var o taskOptions
	tbl := newFlagTable("execute")
	o.register(tbl)
	// Give every flag a value other than its default.
	tbl.fs.VisitAll(func(f *flag.Flag) {
		var err error
		switch v := f.Value.(type) {
		case *listFlag:
			err = v.Set(`["img:1","-v /a:/b"]`)
		case *countFlag:
			v.Set("")
			err = v.Set("")
		case *choiceFlag:
			err = v.Set(v.choices[0])
			if v.val == tbl.defaults[f.Name] {
				err = v.Set(v.choices[len(v.choices)-1])
			}
		case boolFlagger:
			err = f.Value.Set("true")
		default:
			err = f.Value.Set("value-of-" + f.Name)
		}
		if err != nil || f.Value.String() == tbl.defaults[f.Name] {
			t.Fatalf("cannot give --%s a value other than its default (%v): extend this test for %T", f.Name, err, f.Value)
		}
	})
	envOnly := map[string]string{"git-user": "CLEARML_AGENT_GIT_USER", "git-pass": "CLEARML_AGENT_GIT_PASS"}
	global := globalOpts{configFile: "/etc/clearml.conf", debug: true}
	argv := executeArgv(global, o)
	inv, err := parseCommandLine(argv)
	if err != nil {
		t.Fatalf("parse %q: %v", argv, err)
	}
	if inv.global != global {
		t.Errorf("global options %+v, want %+v (argv %q)", inv.global, global, argv)
	}
	env := o.childEnv()
	tbl.fs.VisitAll(func(f *flag.Flag) {
		got := inv.table.fs.Lookup(f.Name).Value.String()
		if name, ok := envOnly[f.Name]; ok {
			if strings.Contains(strings.Join(argv, " "), f.Value.String()) {
				t.Errorf("--%s is in the argv %q", f.Name, argv)
			}
			if !slices.Contains(env, name+"="+f.Value.String()) {
				t.Errorf("--%s is not in the child's environment %q", f.Name, env)
			}
			return
		}
		if got != f.Value.String() {
			t.Errorf("--%s: executeArgv gives %q, which parses back to %q, not %q", f.Name, argv, got, f.Value.String())
		}
	})
	// Defaults give nothing to encode.
	if got := executeArgv(globalOpts{}, taskOptions{id: "t"}); !slices.Equal(got, []string{"execute", "--id", "t"}) {
		t.Errorf("bare options: %q", got)
	}
}
