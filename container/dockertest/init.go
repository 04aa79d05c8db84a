package dockertest

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/flant/flant_gitops/container"
)

var (
	initOnce sync.Once
	initPath string
	initErr  error
)

// InitBinary builds, once per test process, a small static init that
// behaves as the plugin binary does when started as the container's init
// (container/initproc), and returns its path.
func InitBinary(t testing.TB) string {
	t.Helper()
	initOnce.Do(func() {
		dir, err := os.MkdirTemp("", "flant_gitops-init-")
		if err != nil {
			initErr = err
			return
		}
		initPath = filepath.Join(dir, "init")
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
		defer cancel()
		cmd := exec.CommandContext(ctx, "go", "build", "-trimpath", "-o", initPath, "github.com/flant/flant_gitops/container/initproc/testdata/initmain")
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
		if out, err := cmd.CombinedOutput(); err != nil {
			initErr = fmt.Errorf("building the test init: %v\n%s", err, strings.TrimSpace(string(out)))
		}
	})
	if initErr != nil {
		t.Fatal(initErr)
	}
	return initPath
}

// RunnerWithInit is Runner with InitBinary as the runs' init.
func RunnerWithInit(t testing.TB) *container.Docker {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	r, err := container.NewDocker(ctx, container.WithInit(InitBinary(t)))
	if err != nil {
		t.Fatalf("these tests need the real Docker engine (install docker.io and start dockerd, or set DOCKER_HOST): %v", err)
	}
	t.Cleanup(func() { _ = r.Close() })
	return r
}
