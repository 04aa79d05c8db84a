package backend

import (
	"context"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/vault/sdk/logical"

	"github.com/flant/flant_gitops/backend/watch"
)

func TestRunPaths(t *testing.T) {
	b, s := newTestBackend(t, nil, nil)
	ctx := context.Background()
	t0 := time.Date(2026, 2, 1, 8, 0, 0, 0, time.UTC)
	var ids []string
	for i, status := range []string{watch.RunSucceeded, watch.RunFailed, watch.RunRunning} {
		// Stored as the worker stores them: runs/<id> and the log's first
		// chunk under runlog/<id>/.
		id := t0.Add(time.Duration(i)*time.Minute).Format("20060102T150405.000000Z") + "-0a0b0c"
		ids = append(ids, id)
		code := i
		if err := putEntry(ctx, s, "runs/"+id, &watch.Run{ID: id, Commit: commitB, Status: status, ExitCode: &code, CreatedAt: t0}); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.Put(ctx, &logical.StorageEntry{Key: "runlog/" + ids[0] + "/0000000000", Value: []byte("line one\nline two\n")}); err != nil {
		t.Fatal(err)
	}

	tests := []struct {
		name     string
		op       logical.Operation
		path     string
		data     map[string]any
		wantCode int // 0: success; else the HTTP status of the error
		want     []string
		check    func(t *testing.T, resp *logical.Response)
	}{
		{name: "list newest first", op: logical.ListOperation, path: "runs/", check: func(t *testing.T, resp *logical.Response) {
			keys, _ := resp.Data["keys"].([]string)
			if strings.Join(keys, ",") != strings.Join([]string{ids[2], ids[1], ids[0]}, ",") {
				t.Errorf("keys = %v", keys)
			}
			info := resp.Data["key_info"].(map[string]any)[ids[1]].(map[string]any)
			if info["status"] != watch.RunFailed || info["commit"] != commitB {
				t.Errorf("key_info = %v", info)
			}
		}},
		{name: "read a run", op: logical.ReadOperation, path: "runs/" + ids[1], check: func(t *testing.T, resp *logical.Response) {
			if resp.Data["status"] != watch.RunFailed || resp.Data["exit_code"] != 1 {
				t.Errorf("run = %v", resp.Data)
			}
		}},
		{name: "unknown run is not found", op: logical.ReadOperation, path: "runs/nope", check: func(t *testing.T, resp *logical.Response) {
			if resp != nil {
				t.Errorf("got %v", resp.Data)
			}
		}},
		{name: "log page", op: logical.ReadOperation, path: "runs/" + ids[0] + "/log", data: map[string]any{"offset": 5, "limit": 8}, check: func(t *testing.T, resp *logical.Response) {
			if resp.Data["log"] != "one\nline" || resp.Data["next_offset"] != int64(13) || resp.Data["size"] != int64(18) || resp.Data["complete"] != false {
				t.Errorf("page = %v", resp.Data)
			}
		}},
		{name: "log to the end is complete", op: logical.ReadOperation, path: "runs/" + ids[0] + "/log", data: map[string]any{"offset": 13}, check: func(t *testing.T, resp *logical.Response) {
			if resp.Data["log"] != " two\n" || resp.Data["complete"] != true {
				t.Errorf("page = %v", resp.Data)
			}
		}},
		{name: "negative offset", op: logical.ReadOperation, path: "runs/" + ids[0] + "/log", data: map[string]any{"offset": -1}, wantCode: http.StatusBadRequest, want: []string{"offset"}},
		{name: "limit too large", op: logical.ReadOperation, path: "runs/" + ids[0] + "/log", data: map[string]any{"limit": maxLogPage + 1}, wantCode: http.StatusBadRequest, want: []string{"limit"}},
		{name: "cancel an unknown run", op: logical.UpdateOperation, path: "runs/nope/cancel", wantCode: http.StatusNotFound, want: []string{"vault list flant_gitops/runs"}},
		{name: "cancel a finished run", op: logical.UpdateOperation, path: "runs/" + ids[1] + "/cancel", wantCode: http.StatusBadRequest, want: []string{"already ended", "failed"}},
		{name: "cancel a run this instance does not execute", op: logical.UpdateOperation, path: "runs/" + ids[2] + "/cancel", wantCode: http.StatusConflict, want: []string{"not executing"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			resp, err := rawConfigReq(b, s, tt.op, tt.path, tt.data)
			checkWatchResponse(t, resp, err, tt.wantCode, tt.want)
			if tt.check != nil && err == nil {
				tt.check(t, resp)
			}
		})
	}
}

func TestLastSuccessfulCommitPath(t *testing.T) {
	b, s := newTestBackend(t, nil, nil)
	ctx := context.Background()
	if err := putEntry(ctx, s, "watch/state", &watch.State{FailedCommit: commitC, Failures: 3, NextAttemptAt: time.Now().Add(time.Hour)}); err != nil {
		t.Fatal(err)
	}
	read := func() map[string]any {
		t.Helper()
		resp, err := rawConfigReq(b, s, logical.ReadOperation, "configure/last_successful_commit", nil)
		if err != nil {
			t.Fatal(err)
		}
		if resp == nil {
			return nil
		}
		return resp.Data
	}
	if got := read(); got != nil {
		t.Errorf("unset commit read as %v", got)
	}
	for _, bad := range []string{"", "abc", strings.Repeat("g", 40), strings.Repeat("a", 39)} {
		resp, err := rawConfigReq(b, s, logical.UpdateOperation, "configure/last_successful_commit", map[string]any{"commit": bad})
		checkWatchResponse(t, resp, err, http.StatusBadRequest, []string{"40-hex"})
	}
	resp, err := rawConfigReq(b, s, logical.UpdateOperation, "configure/last_successful_commit", map[string]any{"commit": strings.ToUpper(commitB)})
	checkWatchResponse(t, resp, err, 0, nil)
	if got := read(); got["commit"] != commitB || got["source"] != "operator" {
		t.Errorf("after write: %v", got)
	}
	st, err := b.watch.State(ctx, watchStorage{s})
	if err != nil {
		t.Fatal(err)
	}
	if st.FailedCommit != "" || st.Failures != 0 || !st.NextAttemptAt.IsZero() {
		t.Errorf("setting the commit did not clear the backoff: %+v", st)
	}

	// Deleting falls back to initial_last_successful_commit.
	configReq(t, b, s, logical.UpdateOperation, "configure", map[string]any{
		"git_repo_url": "https://git.example/ops.git", "docker_image": "sha256:" + strings.Repeat("1", 64),
		"commands": []string{"true"}, "initial_last_successful_commit": commitA,
	})
	resp, err = rawConfigReq(b, s, logical.DeleteOperation, "configure/last_successful_commit", nil)
	checkWatchResponse(t, resp, err, 0, nil)
	if got := read(); got["commit"] != commitA || got["source"] != "initial_last_successful_commit" {
		t.Errorf("after delete: %v", got)
	}
	status := configReq(t, b, s, logical.ReadOperation, "status", nil)
	if status.Data["last_successful_commit"] != commitA || status.Data["configured"] != true {
		t.Errorf("status = %v", status.Data)
	}
}

func checkWatchResponse(t *testing.T, resp *logical.Response, err error, wantCode int, want []string) {
	t.Helper()
	msg, code := errText(resp, err), status(resp, err)
	if wantCode == 0 { // success
		wantCode = http.StatusOK
	}
	if code != wantCode {
		t.Fatalf("status %d (%q), want %d", code, msg, wantCode)
	}
	for _, w := range want {
		if !strings.Contains(msg, w) {
			t.Errorf("message %q does not say %q", msg, w)
		}
	}
}
