// Package dockertest provides a local test image and helpers for tests that
// run containers on the machine's real Docker engine.
//
// No registry is needed: the image is a root filesystem holding Debian's
// static busybox (package busybox-static), imported with the engine's image
// import API and pinned by its image ID.
package dockertest

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/sha256"
	"debug/elf"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"sort"
	"strings"
	"testing"
	"time"

	cerrdefs "github.com/containerd/errdefs"
	mcontainer "github.com/moby/moby/api/types/container"
	"github.com/moby/moby/client"

	"github.com/flant/flant_gitops/container"
)

// BusyboxPath is where Debian's busybox-static installs the binary.
const BusyboxPath = "/bin/busybox"

// ImageRepo names the imported images; the tag is a hash of their content.
const ImageRepo = "flant-gitops-busybox"

// layoutVersion changes the tag whenever the root filesystem layout changes.
const layoutVersion = "1"

// BusyboxImage returns the ID (sha256:...) of a local image whose /bin holds
// the static busybox and its applets (sh, cat, echo, sleep, wget, ...). The
// image is imported once per busybox binary and changes, and reused
// afterwards. changes are Dockerfile instructions applied on import, for
// example "USER nobody".
func BusyboxImage(ctx context.Context, cli *client.Client, changes ...string) (string, error) {
	return busyboxImage(ctx, cli, BusyboxPath, changes)
}

func busyboxImage(ctx context.Context, cli *client.Client, busybox string, changes []string) (string, error) {
	bin, err := os.ReadFile(busybox)
	if errors.Is(err, os.ErrNotExist) {
		return "", fmt.Errorf("%s is missing: apt-get install busybox-static", busybox)
	}
	if err != nil {
		return "", fmt.Errorf("reading %s: %w", busybox, err)
	}
	if err := checkStatic(busybox, bin); err != nil {
		return "", err
	}
	applets, err := listApplets(ctx, busybox)
	if err != nil {
		return "", err
	}

	h := sha256.New()
	changes = append([]string{`CMD ["/bin/sh"]`, "ENV PATH=/bin:/usr/bin"}, changes...)
	h.Write([]byte(layoutVersion + "\n" + strings.Join(applets, "\n") + "\n" + strings.Join(changes, "\n") + "\n"))
	h.Write(bin)
	ref := ImageRepo + ":" + hex.EncodeToString(h.Sum(nil))[:16]

	if id, err := imageID(ctx, cli, ref); err == nil || !cerrdefs.IsNotFound(err) {
		return id, err
	}

	var rootfs bytes.Buffer
	if err := writeRootfs(&rootfs, bin, applets); err != nil {
		return "", fmt.Errorf("building the busybox root filesystem: %w", err)
	}
	out, err := cli.ImageImport(ctx, client.ImageImportSource{Source: &rootfs, SourceName: "-"}, ref, client.ImageImportOptions{
		Message: "flant_gitops test image: static busybox",
		Changes: changes,
	})
	if err != nil {
		return "", fmt.Errorf("importing %s: %w", ref, err)
	}
	defer out.Close()
	if err := readImportProgress(out); err != nil {
		return "", fmt.Errorf("importing %s: %w", ref, err)
	}
	return imageID(ctx, cli, ref)
}

func imageID(ctx context.Context, cli *client.Client, ref string) (string, error) {
	insp, err := cli.ImageInspect(ctx, ref)
	if err != nil {
		return "", fmt.Errorf("inspecting image %s: %w", ref, err)
	}
	return insp.ID, nil
}

// checkStatic refuses a dynamically linked busybox (Debian's plain "busybox"
// package), which would not start in an image without a C library.
func checkStatic(path string, bin []byte) error {
	f, err := elf.NewFile(bytes.NewReader(bin))
	if err != nil {
		return fmt.Errorf("%s is not an ELF executable (apt-get install busybox-static): %w", path, err)
	}
	defer f.Close()
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP {
			return fmt.Errorf("%s is dynamically linked: apt-get install busybox-static", path)
		}
	}
	return nil
}

func listApplets(ctx context.Context, busybox string) ([]string, error) {
	out, err := exec.CommandContext(ctx, busybox, "--list").Output()
	if err != nil {
		return nil, fmt.Errorf("listing busybox applets with %s --list: %w", busybox, err)
	}
	var applets []string
	for _, a := range strings.Fields(string(out)) {
		// Applet names become file names: keep only plain ones.
		if a != "busybox" && !strings.ContainsAny(a, "/\x00") && a != "." && a != ".." {
			applets = append(applets, a)
		}
	}
	sort.Strings(applets)
	if len(applets) == 0 {
		return nil, fmt.Errorf("%s --list printed no applets", busybox)
	}
	return applets, nil
}

// writeRootfs writes a deterministic root filesystem tar.
func writeRootfs(w io.Writer, bin []byte, applets []string) error {
	tw := tar.NewWriter(w)
	epoch := time.Unix(0, 0)
	dir := func(name string, mode int64) error {
		return tw.WriteHeader(&tar.Header{Typeflag: tar.TypeDir, Name: name + "/", Mode: mode, ModTime: epoch})
	}
	file := func(name string, mode int64, data []byte) error {
		if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: name, Mode: mode, Size: int64(len(data)), ModTime: epoch}); err != nil {
			return err
		}
		_, err := tw.Write(data)
		return err
	}
	link := func(name, target string) error {
		return tw.WriteHeader(&tar.Header{Typeflag: tar.TypeSymlink, Name: name, Linkname: target, Mode: 0o777, ModTime: epoch})
	}
	steps := []func() error{
		func() error { return dir("bin", 0o755) },
		func() error { return dir("etc", 0o755) },
		func() error { return dir("root", 0o700) },
		func() error { return dir("tmp", 0o1777) },
		func() error { return dir("usr", 0o755) },
		func() error { return dir("usr/bin", 0o755) },
		func() error {
			return file("etc/passwd", 0o644, []byte("root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n"))
		},
		func() error { return file("etc/group", 0o644, []byte("root:x:0:\nnogroup:x:65534:\n")) },
		func() error { return file("bin/busybox", 0o755, bin) },
		func() error { return link("usr/bin/env", "/bin/busybox") },
	}
	for _, a := range applets {
		steps = append(steps, func() error { return link("bin/"+a, "busybox") })
	}
	for _, step := range steps {
		if err := step(); err != nil {
			return err
		}
	}
	return tw.Close()
}

// readImportProgress consumes the engine's JSON progress stream and returns
// the error it reports, if any.
func readImportProgress(r io.Reader) error {
	dec := json.NewDecoder(r)
	for {
		var msg struct {
			Error       string `json:"error"`
			ErrorDetail struct {
				Message string `json:"message"`
			} `json:"errorDetail"`
		}
		if err := dec.Decode(&msg); errors.Is(err, io.EOF) {
			return nil
		} else if err != nil {
			return fmt.Errorf("reading the import progress: %w", err)
		}
		if msg.ErrorDetail.Message != "" {
			return errors.New(msg.ErrorDetail.Message)
		}
		if msg.Error != "" {
			return errors.New(msg.Error)
		}
	}
}

// Runner connects to the machine's Docker engine or fails the test, saying
// what is missing. It is closed when the test ends.
func Runner(t testing.TB) *container.Docker {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	r, err := container.NewDocker(ctx)
	if err != nil {
		t.Fatalf("these tests need the real Docker engine (install docker.io and start dockerd, or set DOCKER_HOST): %v", err)
	}
	t.Cleanup(func() { _ = r.Close() })
	return r
}

// Image returns the busybox test image ID (see BusyboxImage) or fails the test.
func Image(t testing.TB, r *container.Docker, changes ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	id, err := BusyboxImage(ctx, r.Client(), changes...)
	if err != nil {
		t.Fatalf("building the local busybox test image: %v", err)
	}
	return id
}

// NoLeftovers fails the test when a managed container carrying labels still
// exists, and removes it so one failure does not cascade.
func NoLeftovers(t testing.TB, r container.Runner, labels map[string]string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	found, err := r.Find(ctx, labels)
	if err != nil {
		t.Fatalf("listing leftover containers: %v", err)
	}
	for _, f := range found {
		t.Errorf("container %s (%s, labels %v) was left behind", f.ID, f.State, f.Labels)
		if err := r.Remove(ctx, f.ID); err != nil {
			t.Errorf("removing leftover container %s: %v", f.ID, err)
		}
	}
}

// StartManaged starts a sleeping container (60 s) that the runner counts as
// its own (label flant_gitops.managed, which container.Spec may not set) with
// labels on d's engine, and leaves it running; the caller removes it.
func StartManaged(ctx context.Context, d *container.Docker, img string, labels map[string]string) (string, error) {
	l := map[string]string{"flant_gitops.managed": "true"}
	for k, v := range labels {
		l[k] = v
	}
	created, err := d.Client().ContainerCreate(ctx, client.ContainerCreateOptions{
		Config: &mcontainer.Config{Image: img, Cmd: []string{"/bin/sleep", "60"}, Labels: l},
	})
	if err != nil {
		return "", err
	}
	_, err = d.Client().ContainerStart(ctx, created.ID, client.ContainerStartOptions{})
	return created.ID, err
}
