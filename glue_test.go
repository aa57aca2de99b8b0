package main

// The glue core against the stand-in server, with a scripted batch system
// (fakeGlueBackend): pending queue, status messages, abort while pending,
// a job that ends without a final status, refusals, outages, --max-jobs
// and restarts. The SLURM backend's own tests run on a real cluster
// (slurm_glue_test.go).

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/clearml-go/clearml-agent/testdata/fakeserver"
)

// fakeGlueBackend is a batch system the test drives by hand.
type fakeGlueBackend struct {
	mu        sync.Mutex
	next      int
	jobs      map[string]*fakeGlueJob
	order     []string
	submitErr error // returned by the next Submit, then cleared
	down      bool  // Jobs and Find fail, as an unreachable controller
	cancelled []string
	released  []string
}

type fakeGlueJob struct {
	task, worker string
	st           glueJobState
}

func newFakeGlueBackend() *fakeGlueBackend {
	return &fakeGlueBackend{jobs: map[string]*fakeGlueJob{}}
}

func (b *fakeGlueBackend) Kind() string                           { return "FAKE" }
func (b *fakeGlueBackend) Label(job string) string                { return "FAKE job " + job }
func (b *fakeGlueBackend) Start(context.Context, glueSetup) error { return nil }
func (b *fakeGlueBackend) Release(_ context.Context, job string) {
	b.mu.Lock()
	b.released = append(b.released, job)
	b.mu.Unlock()
}
func (b *fakeGlueBackend) set(job string, p gluePhase, detail string) {
	b.setState(job, glueJobState{Phase: p, Detail: detail})
}

func (b *fakeGlueBackend) setState(job string, st glueJobState) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.jobs[job].st = st
}

func (b *fakeGlueBackend) Submit(_ context.Context, s glueSubmission) (string, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if err := b.submitErr; err != nil {
		b.submitErr = nil
		return "", err
	}
	if s.Task["id"] != s.TaskID {
		return "", fmt.Errorf("submission without the task document: %v", s.Task)
	}
	b.next++
	id := strconv.Itoa(b.next)
	b.jobs[id] = &fakeGlueJob{task: s.TaskID, worker: s.WorkerID, st: glueJobState{Phase: gluePending, Detail: "PENDING (Priority)"}}
	b.order = append(b.order, id)
	return id, nil
}

func (b *fakeGlueBackend) Jobs(_ context.Context, ids []string) (map[string]glueJobState, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.down {
		return nil, errors.New("controller down")
	}
	out := map[string]glueJobState{}
	for _, id := range ids {
		if j, ok := b.jobs[id]; ok {
			out[id] = j.st
		}
	}
	return out, nil
}

func (b *fakeGlueBackend) Find(_ context.Context, worker string) ([]glueFound, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.down {
		return nil, errors.New("controller down")
	}
	var out []glueFound
	for _, id := range b.order {
		if j := b.jobs[id]; j != nil && j.worker == worker {
			out = append(out, glueFound{Job: id, Task: j.task})
		}
	}
	return out, nil
}

func (b *fakeGlueBackend) Cancel(_ context.Context, ids ...string) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	for _, id := range ids {
		b.cancelled = append(b.cancelled, id)
		if j := b.jobs[id]; j != nil {
			j.st = glueJobState{Phase: glueEnded, Detail: "CANCELLED"}
		}
	}
	return nil
}

func (b *fakeGlueBackend) count() int { b.mu.Lock(); defer b.mu.Unlock(); return b.next }

// jobOf waits for the task's job and returns its id.
func (b *fakeGlueBackend) jobOf(t *testing.T, task string) string {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		b.mu.Lock()
		for _, id := range slices.Backward(b.order) {
			if b.jobs[id].task == task {
				b.mu.Unlock()
				return id
			}
		}
		b.mu.Unlock()
	}
	t.Fatalf("no job submitted for task %s", task)
	return ""
}

// testGlue is a glue running in this process.
type testGlue struct {
	g    *glue
	log  *lockedBuffer
	stop func()
}

const testGlueWorker = "host:fake:0"

// startTestGlue runs a glue over b on queues of s; o's zero fields get
// short test values.
func startTestGlue(t *testing.T, s *fakeserver.Server, b glueBackend, o glueOptions, queues ...string) *testGlue {
	t.Helper()
	if o.Kind == "" {
		o = glueOptions{Kind: "fake", PendingQueue: "fake_scheduler", PendingTags: []string{"fake-glue"}, PendingReason: "fake pending scheduler",
			MaxJobs: o.MaxJobs, StateDir: o.StateDir, EndGrace: 300 * time.Millisecond, StopGrace: o.StopGrace}
	}
	if o.StateDir == "" {
		o.StateDir = t.TempDir()
	}
	c := testClient(t, s.URL(), nil, clientOptions{workerID: testGlueWorker})
	qs, err := resolveQueues(context.Background(), c, queues, true)
	if err != nil {
		t.Fatal(err)
	}
	log := &lockedBuffer{}
	g := newGlue(o, b, &scheduler{api: c, workerID: testGlueWorker, log: log, queues: qs, pace: 50 * time.Millisecond})
	g.retryPause = 500 * time.Millisecond
	if err := g.start(nil, nil); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { g.run(ctx); close(done) }()
	tg := &testGlue{g: g, log: log}
	var once sync.Once
	tg.stop = func() { once.Do(func() { cancel(); <-done }) }
	t.Cleanup(tg.stop)
	return tg
}

// waitTask polls the server until cond holds for the task.
func waitTask(t *testing.T, s *fakeserver.Server, tg *testGlue, id, what string, cond func(fakeserver.Task) bool) fakeserver.Task {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		if task, ok := s.Task(id); ok && cond(task) {
			return task
		}
	}
	task, _ := s.Task(id)
	t.Fatalf("task %s: not %s: status %s (%s) %q\nglue log:\n%s", id, what, task.Status, task.StatusReason, task.StatusMessage, tg.log.String())
	return task
}

func queueEntries(s *fakeserver.Server, name string) []string {
	q, _ := s.Queue(name)
	var ids []string
	for _, e := range q.Entries {
		ids = append(ids, e.Task)
	}
	return ids
}

func enqueueTestTask(t *testing.T, s *fakeserver.Server, queue string) string {
	t.Helper()
	id := s.AddTask(fakeserver.TaskSpec{Name: "glue task"})
	if err := s.Enqueue(id, queue); err != nil {
		t.Fatal(err)
	}
	return id
}

// A task waits queued in the pending queue while its job is pending, with
// the job's state as its message; leaves it when the job runs; and the
// glue forgets the job once the task has its final status.
func TestGlueLifecycle(t *testing.T) {
	s := startServer(t)
	b := newFakeGlueBackend()
	tg := startTestGlue(t, s, b, glueOptions{}, "work")
	id := enqueueTestTask(t, s, "work")
	job := b.jobOf(t, id)
	task := waitTask(t, s, tg, id, "pending", func(task fakeserver.Task) bool {
		return task.StatusMessage == "FAKE job "+job+": PENDING (Priority)"
	})
	pending, _ := s.Queue("fake_scheduler")
	if task.Status != "queued" || task.StatusReason != "fake pending scheduler" || task.Queue != pending.ID {
		t.Errorf("task while pending: %s (%s), execution.queue %s; want queued in %s", task.Status, task.StatusReason, task.Queue, pending.ID)
	}
	if got := queueEntries(s, "fake_scheduler"); !slices.Equal(got, []string{id}) || len(queueEntries(s, "work")) != 0 {
		t.Errorf("pending queue %v, work queue %v", got, queueEntries(s, "work"))
	}
	if !slices.Contains(pending.SystemTags, "fake-glue") {
		t.Errorf("pending queue system tags %v", pending.SystemTags)
	}
	for _, want := range []string{"pulled from", "FAKE job " + job + " submitted by worker " + testGlueWorker, "FAKE job " + job + ": PENDING (Priority)"} {
		if log := s.TaskLogText(id); !strings.Contains(log, want) {
			t.Errorf("console has no %q:\n%s", want, log)
		}
	}
	// The job starts and execute claims the task (as a server that keeps
	// execution.queue would, leaving the pending entry): the entry goes.
	s.SetTaskStatus(id, "in_progress", "worker started execution")
	b.set(job, glueRunning, "RUNNING")
	waitQueueEmpty(t, s, tg, "fake_scheduler")
	s.SetTaskStatus(id, "completed", "done")
	b.set(job, glueEnded, "COMPLETED")
	waitUntil(func() bool { b.mu.Lock(); defer b.mu.Unlock(); return slices.Contains(b.released, job) }, 5*time.Second)
	tg.stop()
	if st := taskStatus(t, s, id); st.Status != "completed" || len(tg.g.state.Jobs) != 0 {
		t.Errorf("after the job: %s, tracked %d\n%s", st.Status, len(tg.g.state.Jobs), tg.log.String())
	}
}

func waitQueueEmpty(t *testing.T, s *fakeserver.Server, tg *testGlue, name string) {
	t.Helper()
	if !waitUntil(func() bool { return len(queueEntries(s, name)) == 0 }, 10*time.Second) {
		t.Fatalf("queue %s still holds %v\n%s", name, queueEntries(s, name), tg.log.String())
	}
}

// A job that ends while its task is still in_progress (killed, timed
// out) fails the task with the backend's reason, after the grace; one that
// ends before it started does too, and leaves the pending queue.
func TestGlueJobEndedFailsTask(t *testing.T) {
	s := startServer(t)
	b := newFakeGlueBackend()
	tg := startTestGlue(t, s, b, glueOptions{}, "work")
	running := enqueueTestTask(t, s, "work")
	j1 := b.jobOf(t, running)
	s.SetTaskStatus(running, "in_progress", "worker started execution")
	b.set(j1, glueRunning, "RUNNING")
	never := enqueueTestTask(t, s, "work")
	j2 := b.jobOf(t, never)
	waitTask(t, s, tg, never, "pending", func(task fakeserver.Task) bool { return strings.HasPrefix(task.StatusMessage, "FAKE job "+j2+":") })
	ended := time.Now()
	b.set(j1, glueEnded, "TIMEOUT (TimeLimit)")
	b.set(j2, glueEnded, "CANCELLED")
	task := waitTask(t, s, tg, running, "failed", func(task fakeserver.Task) bool { return task.Status == "failed" })
	if since := time.Since(ended); since < 300*time.Millisecond {
		t.Errorf("failed %v after the job ended: no grace for execute", since)
	}
	if want := "FAKE job " + j1 + " ended TIMEOUT (TimeLimit) before the task had a final status"; task.StatusReason != want {
		t.Errorf("reason %q, want %q", task.StatusReason, want)
	}
	if log := s.TaskLogText(running); !strings.Contains(log, "ended TIMEOUT (TimeLimit)") {
		t.Errorf("console:\n%s", log)
	}
	task = waitTask(t, s, tg, never, "failed", func(task fakeserver.Task) bool { return task.Status == "failed" })
	if !strings.Contains(task.StatusReason, "ended CANCELLED") || len(queueEntries(s, "fake_scheduler")) != 0 {
		t.Errorf("never started: %q, pending queue %v", task.StatusReason, queueEntries(s, "fake_scheduler"))
	}

	// A task that another agent runs by now (re-enqueued elsewhere after
	// its job) is not this job's to fail; one its job's execute reported
	// from is.
	for _, worker := range []string{"otherhost:0", glueTaskWorkerID(testGlueWorker, "")} {
		id := enqueueTestTask(t, s, "work")
		job := b.jobOf(t, id)
		if worker != "otherhost:0" {
			worker += id
		}
		s.SetTaskStatus(id, "in_progress", "")
		s.UpdateTask(id, func(doc map[string]any) { doc["last_worker"] = worker })
		b.set(job, glueEnded, "COMPLETED")
		if !waitUntil(func() bool { b.mu.Lock(); defer b.mu.Unlock(); return slices.Contains(b.released, job) }, 10*time.Second) {
			t.Fatalf("job %s still tracked\n%s", job, tg.log.String())
		}
		if st := taskStatus(t, s, id).Status; (st == "failed") != (worker != "otherhost:0") {
			t.Errorf("task run by %s: %s after its job ended", worker, st)
		}
	}
}

// An abort (tasks.stop, as the UI) while the job is pending cancels the
// job; the task stays stopped. A deleted task's job is cancelled too.
func TestGlueAbortWhilePending(t *testing.T) {
	s := startServer(t)
	b := newFakeGlueBackend()
	tg := startTestGlue(t, s, b, glueOptions{}, "work")
	id := enqueueTestTask(t, s, "work")
	job := b.jobOf(t, id)
	waitTask(t, s, tg, id, "pending", func(task fakeserver.Task) bool { return strings.Contains(task.StatusMessage, "PENDING") })
	stopTask(t, s, id)
	if !waitUntil(func() bool { b.mu.Lock(); defer b.mu.Unlock(); return slices.Contains(b.cancelled, job) }, 10*time.Second) {
		t.Fatalf("job not cancelled\n%s", tg.log.String())
	}
	waitQueueEmpty(t, s, tg, "fake_scheduler")
	if task := taskStatus(t, s, id); task.Status != "stopped" || !strings.Contains(s.TaskLogText(id), "FAKE job "+job+" cancelled: the task was stopped while the job was pending") {
		t.Errorf("task %s (%s); console:\n%s", task.Status, task.StatusReason, s.TaskLogText(id))
	}
	gone := enqueueTestTask(t, s, "work")
	j2 := b.jobOf(t, gone)
	waitTask(t, s, tg, gone, "pending", func(task fakeserver.Task) bool { return strings.Contains(task.StatusMessage, "PENDING") })
	s.DeleteTask(gone)
	if !waitUntil(func() bool { b.mu.Lock(); defer b.mu.Unlock(); return slices.Contains(b.cancelled, j2) }, 10*time.Second) {
		t.Fatalf("job of a deleted task not cancelled\n%s", tg.log.String())
	}
	// A deleted task whose job had ended: released, nothing to cancel, and
	// the log does not claim a cancel.
	ended := enqueueTestTask(t, s, "work")
	j3 := b.jobOf(t, ended)
	b.set(j3, glueEnded, "COMPLETED")
	s.DeleteTask(ended)
	if !waitUntil(func() bool { b.mu.Lock(); defer b.mu.Unlock(); return slices.Contains(b.released, j3) }, 10*time.Second) {
		t.Fatalf("job %s of a deleted task still tracked\n%s", j3, tg.log.String())
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if slices.Contains(b.cancelled, j3) || !strings.Contains(tg.log.String(), "task "+ended+" was deleted; FAKE job "+j3+" had ended") {
		t.Errorf("ended job %s: cancelled %v\n%s", j3, b.cancelled, tg.log.String())
	}
}

// With StopGrace, a job still running after its task was aborted (and
// set stopped by execute or the UI) is cancelled once the grace is over;
// without it, the job is left to end by itself.
func TestGlueStopGrace(t *testing.T) {
	s := startServer(t)
	b := newFakeGlueBackend()
	tg := startTestGlue(t, s, b, glueOptions{StopGrace: 400 * time.Millisecond}, "work")
	id := enqueueTestTask(t, s, "work")
	job := b.jobOf(t, id)
	s.SetTaskStatus(id, "in_progress", "worker started execution")
	b.set(job, glueRunning, "RUNNING")
	waitQueueEmpty(t, s, tg, "fake_scheduler")
	time.Sleep(600 * time.Millisecond) // in_progress: the job is the task's own
	b.mu.Lock()
	early := slices.Contains(b.cancelled, job)
	b.mu.Unlock()
	if early {
		t.Fatalf("the job of a running task was cancelled\n%s", tg.log.String())
	}
	stopped := time.Now()
	s.SetTaskStatus(id, "stopped", "aborted")
	if !waitUntil(func() bool { b.mu.Lock(); defer b.mu.Unlock(); return slices.Contains(b.released, job) }, 10*time.Second) {
		t.Fatalf("job not released\n%s", tg.log.String())
	}
	if since := time.Since(stopped); since < 400*time.Millisecond || !slices.Contains(b.cancelled, job) {
		t.Errorf("cancelled %v after the abort (grace 400ms), cancelled %v", since, b.cancelled)
	}
	if log := s.TaskLogText(id); !strings.Contains(log, "FAKE job "+job+" cancelled: still running 400ms after the task became stopped") {
		t.Errorf("console:\n%s", log)
	}
	if st := taskStatus(t, s, id); st.Status != "stopped" {
		t.Errorf("status %s", st.Status)
	}

	s2 := startServer(t)
	b2 := newFakeGlueBackend()
	tg2 := startTestGlue(t, s2, b2, glueOptions{}, "work")
	id2 := enqueueTestTask(t, s2, "work")
	j2 := b2.jobOf(t, id2)
	s2.SetTaskStatus(id2, "in_progress", "worker started execution")
	b2.set(j2, glueRunning, "RUNNING")
	waitQueueEmpty(t, s2, tg2, "fake_scheduler")
	s2.SetTaskStatus(id2, "completed", "done")
	time.Sleep(time.Second)
	b2.mu.Lock()
	defer b2.mu.Unlock()
	if len(b2.cancelled) != 0 || len(tg2.g.state.Jobs) != 1 {
		t.Errorf("without StopGrace: cancelled %v, tracked %d", b2.cancelled, len(tg2.g.state.Jobs))
	}
}

// A refusal fails the task with the backend's words; a batch system that
// cannot be asked puts the task back at the head of its queue; a job the
// backend cannot report on is never taken for ended.
func TestGlueRefusalAndOutage(t *testing.T) {
	s := startServer(t)
	b := newFakeGlueBackend()
	b.submitErr = glueRefuse("template t.sh line 3: unknown variable ${CLEARML_X}")
	tg := startTestGlue(t, s, b, glueOptions{}, "work")
	bad := enqueueTestTask(t, s, "work")
	task := waitTask(t, s, tg, bad, "failed", func(task fakeserver.Task) bool { return task.Status == "failed" })
	if task.StatusReason != "template t.sh line 3: unknown variable ${CLEARML_X}" || !strings.Contains(s.TaskLogText(bad), "unknown variable") {
		t.Errorf("refused: %q\n%s", task.StatusReason, s.TaskLogText(bad))
	}

	b.mu.Lock()
	b.submitErr = errors.New("sbatch did not answer within 30s")
	b.mu.Unlock()
	other := s.AddTask(fakeserver.TaskSpec{Name: "other"})
	s.Enqueue(other, "work")
	enqueueTestTask(t, s, "work") // behind other, which must come back in front of it
	job := b.jobOf(t, other)      // the first submission failed, the retry after the pause worked
	if job != "1" {
		t.Errorf("%s got job %s, not the first one", other, job)
	}
	if !strings.Contains(tg.log.String(), "returning it to queue work and pausing pulls") {
		t.Errorf("log:\n%s", tg.log.String())
	}
	s.SetTaskStatus(other, "in_progress", "")
	b.set(job, glueRunning, "RUNNING")
	b.mu.Lock()
	b.down = true
	b.jobs[job].st = glueJobState{Phase: glueEnded, Detail: "NODE_FAIL"}
	b.mu.Unlock()
	time.Sleep(time.Second)
	if st := taskStatus(t, s, other).Status; st != "in_progress" {
		t.Fatalf("status %s while the backend could not be asked\n%s", st, tg.log.String())
	}
	b.mu.Lock()
	b.down = false
	b.mu.Unlock()
	task = waitTask(t, s, tg, other, "failed", func(task fakeserver.Task) bool { return task.Status == "failed" })
	if !strings.Contains(task.StatusReason, "ended NODE_FAIL") {
		t.Errorf("reason %q", task.StatusReason)
	}
}

// --max-jobs: no pull while that many jobs are tracked.
func TestGlueMaxJobs(t *testing.T) {
	s := startServer(t)
	b := newFakeGlueBackend()
	tg := startTestGlue(t, s, b, glueOptions{MaxJobs: 1}, "work")
	first := enqueueTestTask(t, s, "work")
	second := enqueueTestTask(t, s, "work")
	j1 := b.jobOf(t, first)
	time.Sleep(500 * time.Millisecond)
	if b.count() != 1 || !slices.Equal(queueEntries(s, "work"), []string{second}) {
		t.Fatalf("jobs %d, work queue %v: --max-jobs 1 not kept\n%s", b.count(), queueEntries(s, "work"), tg.log.String())
	}
	s.SetTaskStatus(first, "completed", "")
	b.set(j1, glueEnded, "COMPLETED")
	b.jobOf(t, second)
	if !strings.Contains(tg.log.String(), "Maximum number of jobs reached (1/1)") {
		t.Errorf("log:\n%s", tg.log.String())
	}
}

// A restarted glue follows the jobs of its state file, adopts the ones
// only the backend knows (a crash before the state was written), and
// returns a task that never got a job to its queue.
func TestGlueRestart(t *testing.T) {
	s := startServer(t)
	b := newFakeGlueBackend()
	dir := t.TempDir()
	tg := startTestGlue(t, s, b, glueOptions{StateDir: dir}, "work")
	kept := enqueueTestTask(t, s, "work")
	j1 := b.jobOf(t, kept)
	lost := enqueueTestTask(t, s, "work")
	j2 := b.jobOf(t, lost)
	waitTask(t, s, tg, lost, "pending", func(task fakeserver.Task) bool { return strings.Contains(task.StatusMessage, "PENDING") })
	tg.stop()

	// Edit the state as a crash would have left it: the second job never
	// written, and a third task pulled and moved to the pending queue but
	// not submitted.
	st, err := loadGlueState(filepath.Join(dir, glueStateName(testGlueWorker)))
	if err != nil || len(st.Jobs) != 2 {
		t.Fatalf("state: %+v %v", st, err)
	}
	st.Jobs = st.Jobs[:1]
	work, _ := s.Queue("work")
	orphan := enqueueTestTask(t, s, "fake_scheduler")
	s.UpdateTask(orphan, func(doc map[string]any) { doc["status_reason"] = "fake pending scheduler" })
	st.Jobs = append(st.Jobs, &glueJob{Task: orphan, Queue: work.ID, QueueName: "work", Submitted: time.Now()})
	if err := st.save(); err != nil {
		t.Fatal(err)
	}
	s.SetTaskStatus(kept, "in_progress", "")
	b.set(j1, glueEnded, "OUT_OF_MEMORY (OutOfMemory)")
	b.set(j2, glueRunning, "RUNNING")
	s.SetTaskStatus(lost, "in_progress", "")

	tg = startTestGlue(t, s, b, glueOptions{StateDir: dir}, "work")
	task := waitTask(t, s, tg, kept, "failed", func(task fakeserver.Task) bool { return task.Status == "failed" })
	if !strings.Contains(task.StatusReason, "FAKE job "+j1+" ended OUT_OF_MEMORY (OutOfMemory)") {
		t.Errorf("reason %q", task.StatusReason)
	}
	if !strings.Contains(tg.log.String(), "Picked up FAKE job "+j2+" (task "+lost+")") {
		t.Errorf("job %s not adopted:\n%s", j2, tg.log.String())
	}
	// The orphan is back in its queue (and then pulled again, as a new job).
	b.jobOf(t, orphan)
	b.set(j2, glueEnded, "COMPLETED")
	s.SetTaskStatus(lost, "completed", "")
	waitUntil(func() bool { b.mu.Lock(); defer b.mu.Unlock(); return slices.Contains(b.released, j2) }, 5*time.Second)
	tg.stop()
	if st := taskStatus(t, s, lost); st.Status != "completed" {
		t.Errorf("adopted task %s", st.Status)
	}
}

// fakeGlueCmd is a glue command over a fakeGlueBackend.
type fakeGlueCmd struct {
	glueFlags
	b        *fakeGlueBackend
	stateDir string
}

func (f *fakeGlueCmd) flags(t *flagTable) { f.glueFlags.register(t) }

func (f *fakeGlueCmd) run(cx *cmdContext) error {
	return runGlue(cx, &f.glueFlags, glueOptions{Kind: "fake", PendingQueue: "fake_scheduler", PendingReason: "fake pending scheduler",
		StateDir: f.stateDir}, f.b)
}

// The command around the core, in this process: it registers the worker,
// --status lists the tracked jobs, SIGTERM stops it (the jobs stay) and
// unregisters.
func TestGlueCommand(t *testing.T) {
	s := startServer(t)
	b := newFakeGlueBackend()
	dir := t.TempDir()
	saved := commands
	commands = append(slices.Clone(commands), commandInfo{name: "fakeglue", hidden: true,
		new: func() commandImpl { return &fakeGlueCmd{b: b, stateDir: dir} }})
	t.Cleanup(func() { commands = saved })
	for k, v := range serverEnv(s) {
		t.Setenv(k, v)
	}
	t.Setenv("HOME", t.TempDir())
	t.Setenv("CLEARML_AGENT_RUNTIME_DIR", t.TempDir())
	t.Setenv("TMPDIR", t.TempDir()) // Python agents' pid files there would take slots
	t.Setenv("CLEARML_WORKER_NAME", "gluehost")
	out := &lockedBuffer{}
	done := make(chan int, 1)
	go func() {
		done <- run([]string{"fakeglue", "--queue", "work", "--create-queue", "--foreground"}, out, out)
	}()
	if !waitUntil(func() bool { _, ok := s.WorkerByID("gluehost:fake:0"); return ok }, 20*time.Second) {
		t.Fatalf("worker not registered:\n%s", out.String())
	}
	id := enqueueTestTask(t, s, "work")
	job := b.jobOf(t, id)
	var status lockedBuffer
	if code := run([]string{"fakeglue", "--queue", "work", "--status"}, &status, &status); code != 0 {
		t.Fatalf("--status: exit %d\n%s", code, status.String())
	}
	for _, want := range []string{"Listening to queue 'work'", "Worker 'gluehost:fake:0' running on this host",
		"Worker gluehost_fake_0 tracks 1 FAKE job(s)", "FAKE job " + job + ": task " + id + ", queue work"} {
		if !strings.Contains(status.String(), want) {
			t.Errorf("--status has no %q:\n%s", want, status.String())
		}
	}
	syscall.Kill(os.Getpid(), syscall.SIGTERM)
	select {
	case code := <-done:
		if code != 0 {
			t.Errorf("exit %d", code)
		}
	case <-time.After(30 * time.Second):
		t.Fatalf("no exit after SIGTERM:\n%s", out.String())
	}
	if _, ok := s.WorkerByID("gluehost:fake:0"); ok {
		t.Errorf("worker still registered")
	}
	if !strings.Contains(out.String(), "1 job(s) keep running") || len(b.cancelled) != 0 {
		t.Errorf("stop: cancelled %v\n%s", b.cancelled, out.String())
	}
}
