package backend

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/moby/moby/client"

	"github.com/flant/flant_gitops/backend/vaulttest"
	"github.com/flant/flant_gitops/backend/watch"
	"github.com/flant/flant_gitops/container"
	"github.com/flant/flant_gitops/container/dockertest"
)

// When only the Vault process dies (kill -9), its plugin process notices
// that it lost its parent, exits, and leaves the run's container running
// for the next active node instead of following it and racing that node to
// remove it.
func TestE2EOrphanedPluginExitsAndLeavesContainer(t *testing.T) {
	e := newWatchE2E(t)
	e.configureLongRun(dockertest.Image(t, e.docker))

	long := e.commit("orphan\n", "echo orphan run started; while true; do echo still here; sleep 1; done", 0, 1)
	id := e.pollAndWaitLog(long, "orphan run started")

	vaultPid := e.vault.Pid()
	plugins := vaulttest.ChildPIDs(t, vaultPid)
	if len(plugins) == 0 {
		t.Fatalf("no plugin process is a child of Vault (pid %d)", vaultPid)
	}
	// Only Vault, not its process group: the plugins stay behind as
	// orphans, as when Vault crashes.
	if err := syscall.Kill(vaultPid, syscall.SIGKILL); err != nil {
		t.Fatalf("kill -9 vault: %v", err)
	}
	killed := time.Now()

	// A liveness bound, not a speed assertion.
	deadline := killed.Add(60 * time.Second)
	for _, pid := range plugins {
		for processAlive(pid) {
			if time.Now().After(deadline) {
				t.Fatalf("plugin process %d still runs %s after its Vault was killed", pid, time.Since(killed))
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
	t.Logf("plugin processes %v exited %s after Vault was killed", plugins, time.Since(killed).Round(time.Millisecond))

	found, err := e.docker.Find(context.Background(), map[string]string{watch.LabelMount: e.mountID, watch.LabelRun: id})
	if err != nil {
		t.Fatalf("listing the run's containers: %v", err)
	}
	if len(found) != 1 {
		t.Fatalf("%d containers of run %s after the plugin exited, want its one container left running", len(found), id)
	}
	info, err := e.docker.Client().ContainerInspect(context.Background(), found[0].ID, client.ContainerInspectOptions{})
	if err != nil {
		t.Fatalf("inspect the run's container: %v", err)
	}
	if info.Container.State == nil || !info.Container.State.Running {
		t.Errorf("the run's container is not running after the plugin exited: %+v", info.Container.State)
	}
}

// processAlive reports whether pid is a running process; a zombie counts
// as gone (its parent, now init or a subreaper, may not reap it at once).
func processAlive(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	return i < 0 || i+2 >= len(s) || s[i+2] != 'Z'
}

// When Vault dies (kill -9) in the middle of a run and nobody follows its
// container any more, the container still ends at its run_timeout: the
// plugin's init in it stops the commands at the run's deadline by itself,
// with exit code 124. On today's main it ran on for as long as its commands
// did.
func TestE2EOrphanStopsAtRunTimeout(t *testing.T) {
	e := newWatchE2E(t)
	e.configureLongRun(dockertest.Image(t, e.docker))
	e.configure(map[string]any{"run_timeout": "15s"})

	long := e.commit("orphan\n", "echo orphan run started; while true; do echo still here; sleep 1; done", 0, 1)
	id := e.pollAndWaitLog(long, "orphan run started")
	vaultPid := e.vault.Pid()
	plugins := vaulttest.ChildPIDs(t, vaultPid)
	if err := syscall.Kill(vaultPid, syscall.SIGKILL); err != nil {
		t.Fatalf("kill -9 vault: %v", err)
	}
	for _, pid := range plugins {
		for end := time.Now().Add(time.Minute); processAlive(pid); time.Sleep(100 * time.Millisecond) {
			if time.Now().After(end) {
				t.Fatalf("plugin process %d still runs a minute after its Vault was killed", pid)
			}
		}
	}

	found, err := e.docker.Find(context.Background(), map[string]string{watch.LabelMount: e.mountID, watch.LabelRun: id})
	if err != nil || len(found) != 1 || found[0].Deadline.IsZero() {
		t.Fatalf("the run's container after the plugin exited: %+v, %v; want one, with its deadline", found, err)
	}
	deadline := found[0].Deadline
	if left := time.Until(deadline); left <= 0 {
		t.Fatalf("the run's deadline %v passed before the plugin was gone; nothing left to show", deadline)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Until(deadline)+container.KillGrace+10*time.Second)
	defer cancel()
	wait := e.docker.Client().ContainerWait(ctx, found[0].ID, client.ContainerWaitOptions{Condition: "not-running"})
	select {
	case exit := <-wait.Result:
		if exit.StatusCode != container.ExitTimeout {
			t.Fatalf("the orphan ended with code %d, want %d (the init's timeout)", exit.StatusCode, container.ExitTimeout)
		}
	case err := <-wait.Error:
		t.Fatalf("the orphan still runs %s after its deadline with nobody following it: %v", time.Since(deadline).Round(time.Second), err)
	}
	ended := time.Now()
	// A liveness window on one machine's clock, not a speed assertion: the
	// init stops it at the deadline, and TERM ends the loop at once.
	if ended.Before(deadline.Add(-time.Second)) || ended.After(deadline.Add(container.KillGrace)) {
		t.Fatalf("the orphan ended at %v; its deadline was %v", ended, deadline)
	}
	logs, err := e.docker.Client().ContainerLogs(context.Background(), found[0].ID, client.ContainerLogsOptions{ShowStderr: true})
	if err != nil {
		t.Fatal(err)
	}
	defer logs.Close()
	b, _ := io.ReadAll(logs)
	if !bytes.Contains(b, []byte("run_timeout reached")) {
		t.Errorf("the container's log does not say the init stopped it:\n%s", b)
	}
}
