package main

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/clearml-go/clearml-agent/testdata/fakeserver"
)

// An internal error in the poll loop: logged as FATAL ERROR with a crash
// log, and the loop goes on; with agent.crash_on_exception the daemon
// stops with an error instead.
func TestDaemonCrashOnException(t *testing.T) {
	for _, crash := range []bool{false, true} {
		s := startServer(t)
		for range 2 {
			s.Enqueue(s.AddTask(fakeserver.TaskSpec{Script: &fakeserver.Script{EntryPoint: "x.py"}}), fakeserver.DefaultQueueName)
		}
		tmp := t.TempDir()
		conf := map[string]string{"HOME": t.TempDir(), "CLEARML_AGENT_TEMP_STDOUT_FILE_DIR": tmp}
		if crash {
			conf["CLEARML_AGENT__AGENT__CRASH_ON_EXCEPTION"] = "true"
		}
		cfg, err := loadConfig("", mapEnv(conf))
		if err != nil {
			t.Fatal(err)
		}
		c := testClient(t, s.URL(), nil, clientOptions{})
		queues, err := fetchQueues(context.Background(), c, []string{s.DefaultQueueID()})
		if err != nil {
			t.Fatal(err)
		}
		log := &lockedBuffer{}
		sch := &scheduler{cfg: cfg, api: c, workerID: "crash:cpu:0", log: log, queues: queues, pace: time.Millisecond, maxRun: 1,
			now: time.Now, running: map[string]*childTask{}, slotFree: make(chan struct{}, 1)}
		var mu sync.Mutex
		calls := 0
		sch.childCommand = func(string) *exec.Cmd {
			mu.Lock()
			defer mu.Unlock()
			if calls++; calls == 1 {
				panic("injected scheduler bug")
			}
			return exec.Command("true")
		}
		crashed := make(chan struct{})
		sch.onCrash = func() { close(crashed) }
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan struct{})
		go func() { sch.runGuarded(ctx); close(done) }()
		deadline := time.After(30 * time.Second)
	wait:
		for {
			mu.Lock()
			n := calls
			mu.Unlock()
			select {
			case <-crashed:
				break wait
			case <-deadline:
				t.Fatalf("crash %v: %d child starts; log:\n%s", crash, n, log.String())
			case <-time.After(20 * time.Millisecond):
			}
			if !crash && n >= 2 {
				break
			}
		}
		cancel()
		<-done
		out := log.String()
		if !strings.Contains(out, "FATAL ERROR:\ninjected scheduler bug") || !strings.Contains(out, "goroutine") {
			t.Errorf("crash %v: no FATAL ERROR with a stack:\n%s", crash, out)
		}
		files, _ := filepath.Glob(filepath.Join(tmp, ".clearml_agent-crash*.log"))
		err = sch.crashError()
		if crash {
			if len(files) != 0 || err == nil {
				t.Errorf("crash_on_exception: crash files %v, exit %v; want none and an error", files, err)
			}
			continue
		}
		if len(files) != 1 || err != nil {
			t.Fatalf("crash files %v, exit %v; want one file and no error", files, err)
		}
		if b, _ := os.ReadFile(files[0]); !strings.Contains(string(b), "injected scheduler bug") {
			t.Errorf("crash file: %s", b)
		}
	}
}
