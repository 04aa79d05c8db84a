package dockertest

import (
	"context"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/flant/flant_gitops/container"
)

func TestBusyboxImageIsReusedAndRuns(t *testing.T) {
	r := Runner(t)
	first := Image(t, r)
	if again := Image(t, r); again != first {
		t.Errorf("second build gave %s, want the cached %s", again, first)
	}
	if err := container.CheckPinned(first); err != nil {
		t.Errorf("image ID %s is not usable as a pin: %v", first, err)
	}
	if variant := Image(t, r, "USER nobody"); variant == first {
		t.Errorf("a variant with other changes reused %s", first)
	}

	var log strings.Builder
	res, err := r.Run(context.Background(), container.Spec{
		Image:    first,
		Commands: []string{"echo $PATH", "env | grep -c PATH", "sha256sum /bin/busybox | wc -l", "/usr/bin/env true"},
		Timeout:  time.Minute,
		Log:      &log,
	})
	if err != nil || res.ExitCode != 0 {
		t.Fatalf("running applets: %+v, %v; log:\n%s", res, err, log.String())
	}
	if want := "/bin:/usr/bin\n1\n1\n"; log.String() != want {
		t.Errorf("log %q, want %q", log.String(), want)
	}
}

func TestBusyboxImageRefusesWhatCannotWork(t *testing.T) {
	r := Runner(t)
	dynamic, err := exec.LookPath("ls")
	if err != nil {
		t.Fatalf("no ls on PATH to stand for a dynamically linked binary: %v", err)
	}
	tests := []struct {
		name, path, want string
	}{
		{"missing", "/nonexistent/busybox", "apt-get install busybox-static"},
		{"dynamically linked", dynamic, "dynamically linked: apt-get install busybox-static"},
		{"not an executable", "/etc/passwd", "not an ELF executable"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := busyboxImage(context.Background(), r.Client(), tt.path, nil)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("got %v, want an error mentioning %q", err, tt.want)
			}
		})
	}
}
