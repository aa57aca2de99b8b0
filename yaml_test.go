package main

import (
	"bytes"
	"encoding/json"
	"testing"
)

func decodeJSON(t *testing.T, s string) any {
	t.Helper()
	dec := json.NewDecoder(bytes.NewReader([]byte(s)))
	dec.UseNumber()
	var v any
	if err := dec.Decode(&v); err != nil {
		t.Fatal(err)
	}
	return v
}

// Golden output produced by PyYAML 6.0 safe_dump(indent=1,
// default_flow_style=False, allow_unicode=True), the reference's list printer.
func TestDumpYAMLMatchesPyYAML(t *testing.T) {
	in := `{"workers":[{"company":{"id":"c1","name":"clearml"},"id":"host:gpu0","queues":[{"id":"a","num_tasks":0,"next_task":{"id":"t","name":"my task: x"}}],
	"register_time":"2024-01-01T00:00:00.123456+00:00","register_timeout":600,"t":"yes","e":"","x":"1.5","tags":[],"ip":"127.0.0.1","s":"a #b","u":"ünï",
	"task":{"running_time":12.5,"last_iteration":null},"k":"worker_d1_u_h:cpu:0","weird":"-dash","star":"*x","col":"x:","lead":" sp","tagsl":["a","b"]}]}`
	want := `workers:
- col: 'x:'
  company:
    id: c1
    name: clearml
  e: ''
  id: host:gpu0
  ip: 127.0.0.1
  k: worker_d1_u_h:cpu:0
  lead: ' sp'
  queues:
  - id: a
    next_task:
      id: t
      name: 'my task: x'
    num_tasks: 0
  register_time: '2024-01-01T00:00:00.123456+00:00'
  register_timeout: 600
  s: 'a #b'
  star: '*x'
  t: 'yes'
  tags: []
  tagsl:
  - a
  - b
  task:
    last_iteration: null
    running_time: 12.5
  u: ünï
  weird: -dash
  x: '1.5'
`
	if got := dumpYAML(decodeJSON(t, in)); got != want {
		t.Errorf("got:\n%s\nwant:\n%s", got, want)
	}
}

func TestDumpYAMLFolding(t *testing.T) {
	in := `{"w":[{"task":{"name":"a very long task name that goes on and on and on and keeps going beyond eighty columns for sure yes"},"k":"short"}],
	"top":"another very long value that goes on and on and on and keeps going beyond eighty columns for sure",
	"q":"it's a: quoted very long value that goes on and on and on and keeps going beyond eighty columns for sure"}`
	want := `q: 'it''s a: quoted very long value that goes on and on and on and keeps going beyond
  eighty columns for sure'
top: another very long value that goes on and on and on and keeps going beyond eighty
  columns for sure
w:
- k: short
  task:
    name: a very long task name that goes on and on and on and keeps going beyond
      eighty columns for sure yes
`
	if got := dumpYAML(decodeJSON(t, in)); got != want {
		t.Errorf("got:\n%s\nwant:\n%s", got, want)
	}
}

func TestDumpYAMLEmpty(t *testing.T) {
	for in, want := range map[string]string{
		`{"workers":[]}`: "workers: []\n",
		`{}`:             "{}\n",
		`{"a":{}}`:       "a: {}\n",
		`{"n":1.0,"m":1e20,"b":true,"z":"null","o":"0755","f":"3:20"}`: "b: true\nf: '3:20'\nm: 1.0e+20\nn: 1.0\no: '0755'\nz: 'null'\n",
	} {
		if got := dumpYAML(decodeJSON(t, in)); got != want {
			t.Errorf("%s: got %q, want %q", in, got, want)
		}
	}
}
