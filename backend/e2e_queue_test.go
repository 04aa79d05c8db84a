package backend_test

import (
	"bytes"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/flant/flant_gitops/backend/vaulttest"
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

// TestPatchBigRequestsPluginMemory: 16 requests of 24 MB (24 files of 1 MB,
// within Vault's default request and JSON string limits) arrive behind a
// push in flight, with small requests of other projects. The byte budgets,
// sized from the plugin's memory limit (its default 256 MiB here), answer
// the big ones 429 with a time to retry instead of holding them (today's
// main held them until the client gave up, over 1 GiB of RSS), so while
// the push is still held the plugin process comes back under twice its
// memory limit (VmRSS from /proc: when garbage is collected and pages given
// back depends on the runtime, the limit itself is not a sharp bound), and
// the small requests land. The peak while Vault hands the plugin the 16
// requests at once (VmHWM) is reported: they are decoded before any plugin
// code runs, and only Vault's own limits bound that.
func TestPatchBigRequestsPluginMemory(t *testing.T) {
	const big, small, fileBytes, files = 16, 3, 1000 * 1000, 24
	const memLimit = 256 << 20 // the plugin's default soft limit
	e := newPatchE2E(t, burstFiles(big+small+1))
	callers := e.callers(t, big+small+1)
	pid := pluginPID(t, e)
	gate := newPushGate(t, e)
	tag := func(c burstCaller, v string) map[string]any {
		return map[string]any{"commands": []any{setField(c.project+"/values.yml", "image.tag", v)}}
	}
	gate.close(t)
	firstDone := make(chan answer, 1)
	go func() {
		d, id, st, err := patchReq(callers[0].client, tag(callers[0], "first"))
		firstDone <- answer{d, id, st, err}
	}()
	gate.waitHeld(t)
	baseline := procStatusKiB(t, pid, "VmRSS")

	bigDone := make(chan answer, big)
	for i := range big {
		c := callers[1+i]
		go func() {
			var cmds []any
			for j := range files {
				cmds = append(cmds, map[string]any{"path": fmt.Sprintf("%s/big/%d.yml", c.project, j),
					"createFile": map[string]any{"content": strings.Repeat(string(rune('a'+j)), fileBytes)}})
			}
			d, id, st, err := patchReq(c.client, map[string]any{"commands": cmds})
			bigDone <- answer{d, id, st, err}
		}()
	}
	var smallDone []chan answer
	for i := range small {
		c := callers[1+big+i]
		ch := make(chan answer, 1)
		smallDone = append(smallDone, ch)
		go func() {
			d, id, st, err := patchReq(c.client, tag(c, "small"))
			ch <- answer{d, id, st, err}
		}()
	}
	refused := 0
	for range big {
		a := <-bigDone
		if a.status != http.StatusTooManyRequests || !strings.Contains(fmt.Sprint(a.err), "retry in") {
			t.Fatalf("a big request behind the held push: status %d %v, want 429 with a time to retry", a.status, a.err)
		}
		refused++
	}
	answered := procStatusKiB(t, pid, "VmRSS")
	// The runtime gives freed memory back to stay near its limit; what is
	// still held stays.
	bound := int64(2 * memLimit)
	rss := answered
	for deadline := time.Now().Add(30 * time.Second); rss<<10 > bound && time.Now().Before(deadline); time.Sleep(200 * time.Millisecond) {
		rss = procStatusKiB(t, pid, "VmRSS")
	}
	t.Logf("plugin RSS %d MiB before the big requests, %d MiB when %d of them were answered 429, %d MiB then, the push still held; peak (VmHWM) %d MiB; memory limit %d MiB",
		baseline>>10, answered>>10, refused, rss>>10, procStatusKiB(t, pid, "VmHWM")>>10, memLimit>>20)
	if rss<<10 > bound {
		t.Fatalf("the plugin holds %d MiB while the push is held, over twice its memory limit of %d MiB", rss>>10, memLimit>>20)
	}
	gate.open(t)
	if a := <-firstDone; a.err != nil {
		t.Fatalf("first: status %d %v", a.status, a.err)
	}
	for i, ch := range smallDone {
		if a := <-ch; a.err != nil || a.data["no_op"] != false {
			t.Fatalf("small request %d: status %d %v, want it landed", i, a.status, a.err)
		}
	}
	head := e.remote.Head(t)
	for i := range small {
		c := callers[1+big+i]
		if s := e.show(t, head, c.project+"/values.yml"); s != "image:\n  tag: small\n" {
			t.Fatalf("%s/values.yml = %q", c.project, s)
		}
	}
}

// pluginPID is the plugin process Vault started for the mount.
func pluginPID(t *testing.T, e *patchE2E) int {
	t.Helper()
	for _, pid := range vaulttest.ChildPIDs(t, e.v.Pid()) {
		if exe, err := os.Readlink(fmt.Sprintf("/proc/%d/exe", pid)); err == nil && filepath.Base(exe) == vaulttest.PluginName {
			return pid
		}
	}
	t.Fatalf("no %s process under Vault (pid %d)", vaulttest.PluginName, e.v.Pid())
	return 0
}

// procStatusKiB reads a kB field of /proc/PID/status (VmRSS, VmHWM).
func procStatusKiB(t *testing.T, pid int, field string) int64 {
	t.Helper()
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range bytes.Split(data, []byte("\n")) {
		if v, ok := bytes.CutPrefix(line, []byte(field+":")); ok {
			n, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(string(v)), " kB"), 10, 64)
			if err != nil {
				t.Fatalf("/proc/%d/status %s: %v", pid, field, err)
			}
			return n
		}
	}
	t.Fatalf("/proc/%d/status has no %s", pid, field)
	return 0
}
