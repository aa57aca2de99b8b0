package main

// The per-task GPU allocator behind --dynamic-gpus: queue specs, the pool
// from --gpus, and leases that never give one GPU to two tasks.

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"time"
)

// gpuQueueSpec is one "--queue name=N|min-max|-max". A fractional spec
// (name=0.5, name=0.25-0.5, name=0.5-2) has fmin < 1: min is then 0 and
// fmin, fmax hold the fractions (gpu_fraction.go).
type gpuQueueSpec struct {
	queue      string
	min, max   int
	fmin, fmax float64
}

// parseGPUQueueSpec reads name=N (min=max=N), name=MIN-MAX or name=-MAX
// (min 1); a count below 1 is a fraction of one GPU, as in the reference.
func parseGPUQueueSpec(s string) (gpuQueueSpec, error) {
	i := strings.LastIndexByte(s, '=')
	if i <= 0 {
		return gpuQueueSpec{}, fmt.Errorf("--dynamic-gpus: queue %q needs a GPU count, e.g. %s=1 or %s=1-2", s, s, s)
	}
	name, spec := s[:i], strings.TrimSpace(s[i+1:])
	if q, ok, err := parseFractionalSpec(name, spec); ok || err != nil {
		return q, err
	}
	num := func(x string) (int, error) {
		x = strings.TrimSpace(x)
		if n, err := strconv.Atoi(x); err == nil {
			if n <= 0 {
				return 0, fmt.Errorf("--dynamic-gpus: queue %q: GPU count must be positive", name)
			}
			return n, nil
		}
		return 0, fmt.Errorf("--dynamic-gpus: queue %q: invalid GPU count %q", name, x)
	}
	q := gpuQueueSpec{queue: name}
	var err error
	if lo, hi, ok := strings.Cut(spec, "-"); ok {
		q.min = 1
		if strings.TrimSpace(lo) != "" {
			if q.min, err = num(lo); err != nil {
				return q, err
			}
		}
		if q.max, err = num(hi); err != nil {
			return q, err
		}
		if q.min > q.max {
			return q, fmt.Errorf("--dynamic-gpus: queue %q: minimum %d is above maximum %d", name, q.min, q.max)
		}
		return q, nil
	}
	if q.min, err = num(spec); err != nil {
		return q, err
	}
	q.max = q.min
	return q, nil
}

// parseGPUPool reads --gpus for --dynamic-gpus: a range or a list (MIG
// entries allowed; a mix of both is accepted too). Ids are in env-var form.
func parseGPUPool(gpus string) ([]string, error) {
	if gpus == "" || strings.EqualFold(gpus, "all") {
		return nil, errors.New("--dynamic-gpus needs an explicit --gpus list or range, e.g. --gpus 0-7")
	}
	ids, err := gpuListItems(gpus)
	if err != nil {
		return nil, err
	}
	seen := map[string]bool{}
	for _, id := range ids {
		if seen[id] {
			return nil, fmt.Errorf("--gpus: %s is listed twice", id)
		}
		seen[id] = true
	}
	if len(ids) == 0 {
		return nil, errors.New("--dynamic-gpus: --gpus lists no GPU")
	}
	return ids, nil
}

// gpuAllocator hands whole GPUs of a fixed pool to tasks, never one GPU to
// two tasks at once.
type gpuAllocator struct {
	mu        sync.Mutex
	pool      []string // index order
	owner     map[string]*gpuLease
	external  map[string]bool // used by other agents (from the server)
	minFreeMB float64
	freeMem   func(id string) (float64, bool) // nil: no gate

	frac      map[string]float64 // shares of a GPU our fractional leases hold
	extFrac   map[string]float64 // shares other agents' fractional workers hold
	labels    map[string]bool    // fraction labels in use ("0.5a"), ours and others'
	extLabels map[string]bool
}

// gpuLease is the GPUs given to one task. release is idempotent, so every
// way a task can end may call it.
type gpuLease struct {
	a    *gpuAllocator
	task string
	ids  []string
	once sync.Once

	fraction float64 // a share of ids[0] (0: whole GPUs)
	label    string  // a fraction's worker id suffix: "0.5a"
}

// newGPUAllocator: minFreeMB > 0 with freeMem skips GPUs whose known free
// memory is below it (agent.gpu_free_memory_min_mb); unknown passes.
func newGPUAllocator(pool []string, minFreeMB float64, freeMem func(string) (float64, bool)) *gpuAllocator {
	return &gpuAllocator{
		pool:      append([]string(nil), pool...),
		owner:     map[string]*gpuLease{},
		external:  map[string]bool{},
		minFreeMB: minFreeMB,
		freeMem:   freeMem,
	}
}

// setExternal marks the GPUs other live workers use (replacing the last set).
func (a *gpuAllocator) setExternal(ids []string) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.external = map[string]bool{}
	for _, id := range ids {
		a.external[id] = true
	}
}

// eligibleLocked lists free GPUs that pass the memory gate.
func (a *gpuAllocator) eligibleLocked() []string {
	var out []string
	for _, id := range a.pool {
		if a.owner[id] != nil || a.external[id] || a.frac[id] > 0 || a.extFrac[id] > 0 {
			continue
		}
		if a.minFreeMB > 0 && a.freeMem != nil {
			if free, ok := a.freeMem(id); ok && free < a.minFreeMB {
				continue
			}
		}
		out = append(out, id)
	}
	return out
}

// available is how many GPUs a task could get now, and the pool size.
func (a *gpuAllocator) available() (free, total int) {
	a.mu.Lock()
	defer a.mu.Unlock()
	return len(a.eligibleLocked()), len(a.pool)
}

// allocate gives task up to max free GPUs in index order, or nil when
// fewer than min are free.
func (a *gpuAllocator) allocate(task string, min, max int) *gpuLease {
	if min < 1 {
		min = 1
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	free := a.eligibleLocked()
	if len(free) < min {
		return nil
	}
	if len(free) > max {
		free = free[:max]
	}
	l := &gpuLease{a: a, task: task, ids: free}
	for _, id := range free {
		a.owner[id] = l
	}
	return l
}

// visible is the lease as an env-var value ("0,1" or "0:1").
func (l *gpuLease) visible() string { return strings.Join(l.ids, ",") }

func (l *gpuLease) release() {
	l.once.Do(func() {
		l.a.mu.Lock()
		defer l.a.mu.Unlock()
		for _, id := range l.ids {
			if l.a.owner[id] == l {
				delete(l.a.owner, id)
			}
		}
		l.a.releaseFractionLocked(l)
	})
}

// refreshExternalGPUs marks the GPUs that other live workers of this host
// (<name>:gpu<list>, not our own children) run tasks on, as the reference
// does, so two agents sharing a pool never hand out the same GPU.
func (s *scheduler) refreshExternalGPUs(ctx context.Context) {
	var r struct {
		Workers []struct {
			ID string `json:"id"`
		} `json:"workers"`
	}
	if err := s.api.call(withBudget(ctx, 10*time.Second), "workers.get_all", "", map[string]any{"last_seen": 600}, &r); err != nil {
		return
	}
	prefix := s.cfg.str("agent.worker_name") + ":gpu"
	s.mu.Lock()
	ours := map[string]bool{}
	for _, c := range s.running {
		if c.lease != nil {
			ours[prefix+c.lease.workerLabel()] = true
		}
	}
	s.mu.Unlock()
	var busy []string
	shares, labels := map[string]float64{}, map[string]bool{}
	for _, w := range r.Workers {
		if !strings.HasPrefix(w.ID, prefix) || ours[w.ID] {
			continue
		}
		// Another agent's --gpus text: "0,1", "0-3", "0.1", or fractions "0.5a".
		devs := strings.TrimPrefix(w.ID, prefix)
		if fr, ls, ok := parseFractionalWorker(devs); ok {
			for id, f := range fr {
				shares[id] += f
			}
			for _, l := range ls {
				labels[l] = true
			}
			continue
		}
		if ids, err := gpuListItems(devs); err == nil {
			busy = append(busy, ids...)
			continue
		}
		for _, g := range strings.Split(devs, ",") {
			busy = append(busy, strings.ReplaceAll(g, ".", ":"))
		}
	}
	s.alloc.setExternal(busy)
	s.alloc.setExternalFractions(shares, labels)
}

// allocateGPUs makes the scheduler hand each task the GPUs its queue asks
// for (--dynamic-gpus), tasks side by side as long as GPUs are free.
func (s *scheduler) allocateGPUs(specs []gpuQueueSpec, pool []string, gset *gpuSet) {
	for i, spec := range specs {
		s.queues[i].gpuMin, s.queues[i].gpuMax = spec.min, spec.max
		s.queues[i].gpuFracMin, s.queues[i].gpuFracMax = spec.fmin, spec.fmax
	}
	var freeMem func(string) (float64, bool)
	if gset != nil {
		freeMem = gset.freeMemMB
	}
	s.alloc = newGPUAllocator(pool, s.cfg.float("agent.gpu_free_memory_min_mb", 0), freeMem)
	s.leases = map[string]*gpuLease{}
	s.maxRun = 0 // bounded by free GPUs
}

// leaseGPUs takes the GPUs of a pulled task's queue (--dynamic-gpus), or
// puts the task back when they are gone: only this daemon allocates, so the
// check before the poll holds unless another agent took GPUs meanwhile.
func (s *scheduler) leaseGPUs(c context.Context, taskID string, q queueRef) bool {
	if s.alloc == nil {
		return true
	}
	lease := s.alloc.allocateQueue(taskID, q)
	if lease == nil {
		s.logf("Not enough free GPUs for task %s: returning it to queue %s", taskID, q.Name)
		s.status().requeue(c, q.ID, taskID)
		return false
	}
	s.mu.Lock()
	s.leases[taskID] = lease
	s.mu.Unlock()
	return true
}
