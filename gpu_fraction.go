package main

// Fractional GPUs with --dynamic-gpus, as the newest reference: a queue
// spec below 1 (--queue half=0.5, --queue small=0.25-0.5) gives a task a
// share of one GPU, so several tasks run side by side on it. The share is
// scheduling: the worker is <name>:gpu0.5a, shares on a GPU never add up
// past 1 (other agents' fractional workers on the host count too), and
// the container gets CLEARML_AGENT_GPU_FRACTIONS. What needs ClearML
// Enterprise is not done: capping a task's GPU memory to its share (the
// reference loads the closed clearml_agent_fractional_gpu module for
// that), and the gpu_fraction statistic in status reports (sent only to
// paid servers). A task sees the whole GPU and must keep to its share.

import (
	"fmt"
	"math"
	"strconv"
	"strings"
)

// fractionalGPUNote is what the daemon says when it serves fractional queues.
const fractionalGPUNote = "Fractional GPU queues: tasks share a GPU by their queue's fraction; " +
	"their GPU memory is not limited (that needs ClearML Enterprise's fractional GPU support), so size the tasks to fit"

// parseFractionalSpec reads a spec whose minimum is below 1: name=F,
// name=F-MAX or name=-F. ok is false for whole-GPU specs.
func parseFractionalSpec(name, spec string) (q gpuQueueSpec, ok bool, err error) {
	lo, hi, ranged := strings.Cut(spec, "-")
	if !ranged {
		hi = lo
	}
	lo, hi = strings.TrimSpace(lo), strings.TrimSpace(hi)
	fmin, fmax := 1.0, 0.0
	if lo != "" {
		if fmin, err = strconv.ParseFloat(lo, 64); err != nil {
			return q, false, nil // not a number: the whole-GPU parser says why
		}
	}
	if fmax, err = strconv.ParseFloat(hi, 64); err != nil {
		return q, false, nil
	}
	if fmin >= 1 {
		if fmax != math.Trunc(fmax) {
			return q, true, fmt.Errorf("--dynamic-gpus: queue %q: invalid GPU count %q: a fraction must be below 1", name, spec)
		}
		return q, false, nil
	}
	switch {
	case fmin <= 0 || fmax <= 0:
		return q, true, fmt.Errorf("--dynamic-gpus: queue %q: GPU count must be positive", name)
	case fmax > 1 && fmax != math.Trunc(fmax):
		return q, true, fmt.Errorf("--dynamic-gpus: queue %q: invalid GPU count %q: a fraction must be below 1", name, spec)
	case fmin > fmax:
		return q, true, fmt.Errorf("--dynamic-gpus: queue %q: minimum %s is above maximum %s", name, lo, hi)
	}
	return gpuQueueSpec{queue: name, max: int(fmax), fmin: fmin, fmax: fmax}, true, nil
}

// fracFreeLocked is the share of a GPU still free for fractions.
func (a *gpuAllocator) fracFreeLocked(id string) float64 {
	if a.owner[id] != nil || a.external[id] {
		return 0
	}
	if a.minFreeMB > 0 && a.freeMem != nil {
		if free, ok := a.freeMem(id); ok && free < a.minFreeMB {
			return 0
		}
	}
	return max(0, 1-a.frac[id]-a.extFrac[id])
}

// fractionFree is the largest share left on one GPU.
func (a *gpuAllocator) fractionFree() float64 {
	a.mu.Lock()
	defer a.mu.Unlock()
	best := 0.0
	for _, id := range a.pool {
		best = max(best, a.fracFreeLocked(id))
	}
	return best
}

// fits says whether a task of a fractional queue could start now.
func (a *gpuAllocator) fits(q queueRef) bool {
	return q.gpuFracMin > 0 && a.fractionFree() >= q.gpuFracMin-1e-9
}

// allocateQueue gives task what its queue asks for: whole GPUs, or for a
// fractional queue (as the reference) whole GPUs up to its maximum when
// that is 1 or more and some are free, else a share of the GPU that fits
// the maximum most tightly, else the largest share left (in eighths) that
// still meets the minimum.
func (a *gpuAllocator) allocateQueue(task string, q queueRef) *gpuLease {
	if q.gpuFracMin <= 0 {
		return a.allocate(task, q.gpuMin, q.gpuMax)
	}
	if q.gpuFracMax >= 1 {
		if l := a.allocate(task, 1, int(q.gpuFracMax)); l != nil {
			return l
		}
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	need := min(q.gpuFracMax, 1)
	best, most, bestLeft, mostFree := "", "", 2.0, 0.0
	for _, id := range a.pool {
		f := a.fracFreeLocked(id)
		if f < q.gpuFracMin-1e-9 {
			continue
		}
		if left := f - need; left >= -1e-9 && left < bestLeft {
			best, bestLeft = id, left
		}
		if f > mostFree {
			most, mostFree = id, f
		}
	}
	id, share := best, need
	if id == "" {
		if most == "" {
			return nil
		}
		id, share = most, math.Floor(mostFree*8+1e-9)/8
		if share < q.gpuFracMin {
			share = mostFree
		}
	}
	if a.frac == nil {
		a.frac, a.labels = map[string]float64{}, map[string]bool{}
	}
	a.frac[id] += share
	base := strings.ReplaceAll(id, ":", ".") + "." + strings.TrimPrefix(pyFloat(share), "0.")
	label := base
	for c := 'a'; c <= 'z'; c++ {
		if !a.labels[base+string(c)] && !a.extLabels[base+string(c)] {
			label = base + string(c)
			break
		}
	}
	a.labels[label] = true
	return &gpuLease{a: a, task: task, ids: []string{id}, fraction: share, label: label}
}

func (a *gpuAllocator) releaseFractionLocked(l *gpuLease) {
	if l.fraction <= 0 {
		return
	}
	id := l.ids[0]
	if a.frac[id] -= l.fraction; a.frac[id] < 1e-9 {
		delete(a.frac, id)
	}
	delete(a.labels, l.label)
}

// setExternalFractions records other agents' fractional workers.
func (a *gpuAllocator) setExternalFractions(shares map[string]float64, labels map[string]bool) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.extFrac, a.extLabels = shares, labels
}

// workerLabel is the lease as a worker id suffix: "0,1", "0.1" (MIG) or a
// fraction's "0.5a".
func (l *gpuLease) workerLabel() string {
	if l.fraction > 0 {
		return l.label
	}
	return strings.ReplaceAll(l.visible(), ":", ".")
}

// fractionsEnv is CLEARML_AGENT_GPU_FRACTIONS for the lease's container:
// its share, or 1 per whole GPU, as the reference.
func (l *gpuLease) fractionsEnv() string {
	if l.fraction > 0 {
		return pyFloat(l.fraction)
	}
	ones := make([]string, len(l.ids))
	for i := range ones {
		ones[i] = "1"
	}
	return strings.Join(ones, ",")
}

// fractionalWorkerRe is a fractional worker's GPU: "0.5a" (index, share
// digits, letters), as the reference matches them.
var fractionalWorkerRe = lazyRegexp(`^(\d+)\.(\d*)([a-z]+)$`)

// parseFractionalWorker reads the suffix of another agent's worker id
// ("0.5a,1.25b"); ok is false unless every item is a fraction.
func parseFractionalWorker(devs string) (shares map[string]float64, labels []string, ok bool) {
	shares = map[string]float64{}
	for _, g := range strings.Split(strings.ToLower(devs), ",") {
		m := fractionalWorkerRe().FindStringSubmatch(strings.TrimSpace(g))
		if m == nil {
			return nil, nil, false
		}
		f, err := strconv.ParseFloat("0."+m[2], 64)
		if err != nil {
			return nil, nil, false
		}
		shares[m[1]] += f
		labels = append(labels, strings.TrimSpace(g))
	}
	return shares, labels, true
}
