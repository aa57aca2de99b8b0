package main

import (
	"context"
	"os/exec"
	"sync"
	"testing"
	"time"

	"github.com/clearml-go/clearml-agent/testdata/fakeserver"
)

// A stress test of the scheduler: many tasks, several queues, services
// mode with a limit, fake children. Every task is taken exactly once and
// never more than the limit run at once.
func TestSchedulerStress(t *testing.T) {
	s := startServer(t)
	q2 := s.AddQueue("second")
	var ids []string
	for i := 0; i < 40; i++ {
		q := fakeserver.DefaultQueueName
		if i%2 == 1 {
			q = "second"
		}
		id := s.AddTask(fakeserver.TaskSpec{Script: &fakeserver.Script{EntryPoint: "x.py"}})
		if err := s.Enqueue(id, q); err != nil {
			t.Fatal(err)
		}
		ids = append(ids, id)
	}
	c := testClient(t, s.URL(), nil, clientOptions{})
	queues, err := fetchQueues(context.Background(), c, []string{s.DefaultQueueID(), q2})
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	runningNow, peak, started := 0, 0, map[string]int{}
	sch := &scheduler{
		api: c, workerID: "stress:cpu:0", log: &lockedBuffer{}, queues: queues,
		pace: time.Millisecond, maxRun: 3, now: time.Now,
		running: map[string]*childTask{}, slotFree: make(chan struct{}, 1),
	}
	sch.childCommand = func(taskID string) *exec.Cmd {
		mu.Lock()
		started[taskID]++
		runningNow++
		peak = max(peak, runningNow)
		mu.Unlock()
		return exec.Command("sh", "-c", "sleep 0.02")
	}
	sch.childExited = func(string) {
		mu.Lock()
		runningNow--
		mu.Unlock()
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { sch.run(ctx); close(done) }()
	deadline := time.Now().Add(60 * time.Second)
	for time.Now().Before(deadline) {
		mu.Lock()
		n := len(started)
		mu.Unlock()
		if n == len(ids) {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	sch.drain(10*time.Second, nil)
	cancel()
	<-done
	mu.Lock()
	defer mu.Unlock()
	for _, id := range ids {
		if started[id] != 1 {
			t.Errorf("task %s started %d times", id, started[id])
		}
	}
	if peak > 3 || peak < 2 {
		t.Errorf("peak concurrency %d, want 2..3", peak)
	}
}
