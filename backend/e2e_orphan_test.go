package backend

import (
	"context"
	"fmt"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/moby/moby/client"

	"github.com/flant/flant_gitops/backend/vaulttest"
	"github.com/flant/flant_gitops/backend/watch"
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
