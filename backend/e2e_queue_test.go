package backend_test

import (
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/flant/flant_gitops/gitwatch/gittest"
)

// The marker the test hook refuses, as secret push protection refuses a key.
const (
	refusedMarker = "FORBIDDEN-MARKER"
	refusedReason = "push protection: a secret was found in the commit, remove it"
)

// TestPatchGroupRefusedMember: the git server's pre-receive hook refuses any
// push holding a commit that adds the marker. A burst queued behind a push
// in flight goes out as one group in which one caller's value carries the
// marker: that caller is answered 422 naming the hook's reason, and every
// other caller's commit lands, signed, with its own trailers.
func TestPatchGroupRefusedMember(t *testing.T) {
	const n, bad = 6, 2
	e := newPatchE2E(t, burstFiles(n))
	callers := e.callers(t, n)
	gnupg := e.pluginGPG(t)
	gate := newPushGate(t, e, gittest.RefuseContent(refusedMarker, refusedReason))
	tag := func(i int, v string) map[string]any {
		return map[string]any{"commands": []any{setField(callers[i].project+"/values.yml", "image.tag", v)}}
	}
	before := e.remote.Head(t)
	gate.close(t)
	firstDone := make(chan answer, 1)
	go func() {
		d, id, st, err := patchReq(callers[0].client, tag(0, "first"))
		firstDone <- answer{d, id, st, err}
	}()
	gate.waitHeld(t)
	var bodies []map[string]any
	for i := range n {
		bodies = append(bodies, tag(i, fmt.Sprintf("v%d", i+1)))
	}
	bodies[bad] = tag(bad, refusedMarker+"-1")
	answers := make(chan []answer, 1)
	go func() { answers <- sendAll(callers, bodies) }()
	time.Sleep(500 * time.Millisecond) // let the burst reach the queue; the outcome holds either way
	gate.open(t)
	if a := <-firstDone; a.err != nil {
		t.Fatalf("first: status %d %v", a.status, a.err)
	}
	got := <-answers
	head := e.remote.Head(t)
	for i, a := range got {
		if i == bad {
			if a.status != http.StatusUnprocessableEntity || !strings.Contains(fmt.Sprint(a.err), refusedReason) {
				t.Fatalf("the refused caller: status %d %v, want 422 naming the hook's reason", a.status, a.err)
			}
			t.Logf("the refused caller's answer: %d %v", a.status, a.err)
			continue
		}
		if a.err != nil || a.data["no_op"] != false {
			t.Fatalf("caller %d: status %d %v %v, want its commit landed", i, a.status, a.err, a.data)
		}
		commit, _ := a.data["commit"].(string)
		if out, err := e.git(t, nil, "merge-base", "--is-ancestor", commit, head); err != nil {
			t.Fatalf("caller %d's commit %s is not on the branch: %s", i, commit, out)
		}
		e.checkCommit(t, gnupg, commit, callers[i], a.reqID)
	}
	if c, _ := e.git(t, nil, "rev-list", "--count", before+".."+head); c != strconv.Itoa(n) {
		t.Fatalf("%s new commits, want %d (the first and %d of the burst)", c, n, n-1)
	}
	if s := e.show(t, head, callers[bad].project+"/values.yml"); s != "image:\n  tag: v0\n" {
		t.Fatalf("the refused caller's file = %q, want it untouched", s)
	}
	if out, _ := e.git(t, nil, "log", "-p", head); strings.Contains(out, refusedMarker) {
		t.Fatal("a commit with the marker reached the branch")
	}
}

// TestPatchFairShare: one identity's no-op requests fill a branch's queue
// (256) behind a push in flight; another project's request is still
// accepted (the flood's newest makes room and is answered 429 naming the
// fair share), and it lands when the push returns.
func TestPatchFairShare(t *testing.T) {
	const queue, extra = 256, 8
	e := newPatchE2E(t, burstFiles(2))
	callers := e.callers(t, 2)
	flood, other := callers[0], callers[1]
	gate := newPushGate(t, e)
	gate.close(t)
	firstDone := make(chan answer, 1)
	go func() {
		d, id, st, err := patchReq(flood.client, map[string]any{"commands": []any{setField(flood.project+"/values.yml", "image.tag", "first")}})
		firstDone <- answer{d, id, st, err}
	}()
	gate.waitHeld(t)

	noOp := map[string]any{"commands": []any{setField(flood.project+"/values.yml", "image.tag", "first")}}
	floodDone := make(chan answer, queue+extra)
	var wg sync.WaitGroup
	for range queue + extra {
		wg.Add(1)
		go func() {
			defer wg.Done()
			d, id, st, err := patchReq(flood.client, noOp)
			floodDone <- answer{d, id, st, err}
		}()
	}
	// The queue is full when the flood's extra requests are refused.
	for range extra {
		if a := <-floodDone; a.status != http.StatusTooManyRequests || !strings.Contains(fmt.Sprint(a.err), "retry in") {
			t.Fatalf("the flood: status %d %v, want 429 once the queue is full", a.status, a.err)
		}
	}
	otherDone := make(chan answer, 1)
	go func() {
		d, id, st, err := patchReq(other.client, map[string]any{"commands": []any{setField(other.project+"/values.yml", "image.tag", "other")}})
		otherDone <- answer{d, id, st, err}
	}()
	select {
	case a := <-otherDone:
		t.Fatalf("the other project was answered while the push was held: status %d %v, want it queued", a.status, a.err)
	case a := <-floodDone:
		if a.status != http.StatusTooManyRequests || !strings.Contains(fmt.Sprint(a.err), "fair share") {
			t.Fatalf("the flood: status %d %v, want its newest answered 429 naming the fair share", a.status, a.err)
		}
	}
	gate.open(t)
	if a := <-firstDone; a.err != nil {
		t.Fatalf("first: status %d %v", a.status, a.err)
	}
	a := <-otherDone
	if a.err != nil || a.data["no_op"] != false {
		t.Fatalf("the other project: status %d %v, want its commit landed", a.status, a.err)
	}
	if s := e.show(t, e.remote.Head(t), other.project+"/values.yml"); s != "image:\n  tag: other\n" {
		t.Fatalf("%s/values.yml = %q", other.project, s)
	}
	wg.Wait()
	close(floodDone)
	for a := range floodDone {
		if a.err != nil || a.data["no_op"] != true {
			t.Fatalf("the flood: status %d %v, want its queued no-ops answered", a.status, a.err)
		}
	}
}
