package container

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"debug/elf"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	cerrdefs "github.com/containerd/errdefs"
	"github.com/moby/moby/api/types/container"
	"github.com/moby/moby/api/types/mount"
	"github.com/moby/moby/client"

	"github.com/flant/flant_gitops/container/initproc"
)

// The run's container has an init of ours as PID 1 (container/initproc): it
// ends the commands at Spec.Deadline by itself, so a run stops on time even
// when nobody follows its container (its node crashed, or the next active
// node reaches another engine). The init is the plugin binary itself, kept
// once per engine and plugin build in a Docker volume named after the
// binary's sha256 and mounted read-only into every run: nothing is pulled
// and the ~65 MB binary is not copied on every run.
const (
	// initDir is where the init volume is mounted in a run's container.
	initDir = "/.flant_gitops"
	// initVolumePrefix names the init volumes: prefix + 16 hex of the sha256.
	initVolumePrefix = "flant_gitops-init-"
	// initReady is written after the binary: a volume holds a whole init
	// once it is there with the binary's sha256.
	initReady = "ready"
	// labelInitSHA and labelInitToken mark an init volume: the binary it
	// holds and who created it (the creator fills it, others wait for it).
	labelInitSHA   = "flant_gitops.init.sha256"
	labelInitToken = "flant_gitops.init.token"
	// labelInit marks a run's container that has our init; labelDeadline is
	// its deadline (RFC 3339, UTC), so whoever finds the container knows it.
	labelInit     = "flant_gitops.init"
	labelDeadline = "flant_gitops.deadline"
	// initWaitForOther bounds the wait for another node filling a volume.
	initWaitForOther = 60 * time.Second
)

// InitHelperNamePrefix begins the name of the never-started container that
// fills an init volume (it exists for a moment, once per engine and build).
const InitHelperNamePrefix = "flant_gitops-init-helper-"

// KillGrace is the time the init gives the commands between TERM and KILL at
// the deadline.
const KillGrace = initproc.DefaultGrace

// DeadlineMargin is how long after Spec.Deadline a run's container may still
// be running on another node's engine, as that node's clock reads it: the
// init's kill grace (KillGrace), the engine stopping the container, and up
// to 45 seconds of clock skew between the Vault nodes and the engine hosts.
// A fence on a run lifts, and an orphan is removed, only after it.
const DeadlineMargin = time.Minute

// followerSlack is how long after the init's kill grace the follower waits
// before it kills the container itself.
const followerSlack = 5 * time.Second

// ExitTimeout is the exit code of a run whose init ended it at its deadline.
const ExitTimeout = initproc.ExitTimeout

// selfInit is set by UseSelfAsInit.
var selfInit atomic.Bool

// UseSelfAsInit declares that the running binary serves as the init of run
// containers when started as initproc.Name (the plugin's main hands such a
// start to initproc.Main); runners made afterwards use it by default.
func UseSelfAsInit() { selfInit.Store(true) }

// WithInit sets the init binary delivered into run containers: a static
// Linux executable that behaves as initproc.Main when started as
// initproc.Name. "" runs without an init (the follower alone enforces the
// timeout). The default is the running binary after UseSelfAsInit, else none.
func WithInit(path string) Option {
	return func(o *dockerOptions) { o.init, o.initSet = path, true }
}

// initBinary is the init a Docker runner delivers, and what it learnt about
// the engine; the engine's answers are kept, so the checks cost one round
// trip per runner and a volume inspect per run.
type initBinary struct {
	path string

	mu     sync.Mutex
	sum    string // sha256 of the binary, hex
	size   int64
	static error // why the binary cannot run in a container, once checked
	engine *initEngineCheck
	volume string // the filled volume, once known
}

type initEngineCheck struct{ warning string }

// initSetup is how one run gets its init: volume "" means none, and then
// warning says why when the operator should know.
type initSetup struct {
	volume  string
	warning string
}

func defaultInitPath(o dockerOptions) string {
	if o.initSet {
		return o.init
	}
	if !selfInit.Load() {
		return ""
	}
	exe, err := os.Executable()
	if err != nil {
		return ""
	}
	return exe
}

// prepareInit makes sure the engine has the init volume, filling it from
// the binary on first use through a never-started container of image. A
// binary or an engine that cannot have our init is not an error: the run
// goes on with the follower alone and a warning.
func (d *Docker) prepareInit(ctx context.Context, image string) (initSetup, error) {
	ib := d.init
	if ib == nil {
		return initSetup{}, nil
	}
	ib.mu.Lock()
	defer ib.mu.Unlock()
	if ib.sum == "" && ib.static == nil {
		ib.sum, ib.size, ib.static = checkInitBinary(ib.path)
	}
	if ib.static != nil {
		return initSetup{warning: noInitWarning(ib.static.Error())}, nil
	}
	if ib.engine == nil {
		res, err := d.cli.Info(ctx, client.InfoOptions{})
		if err != nil {
			return initSetup{}, fmt.Errorf("asking the Docker engine for its OS and architecture: %w", d.explain(err))
		}
		ib.engine = &initEngineCheck{warning: engineFitsInit(res.Info.OSType, res.Info.Architecture, runtime.GOOS, runtime.GOARCH)}
	}
	if ib.engine.warning != "" {
		return initSetup{warning: noInitWarning(ib.engine.warning)}, nil
	}
	name := initVolumePrefix + ib.sum[:16]
	// The volume may have been removed since (docker volume prune): a
	// mount of a missing volume would create it empty.
	if ib.volume != "" {
		v, err := d.cli.VolumeInspect(ctx, name, client.VolumeInspectOptions{})
		if err == nil && v.Volume.Labels[labelInitSHA] == ib.sum {
			return initSetup{volume: name}, nil
		}
		ib.volume = ""
	}
	if err := d.fillInitVolume(ctx, ib, name, image); err != nil {
		return initSetup{}, fmt.Errorf("putting the plugin's init (the process that stops a run at its run_timeout) into Docker volume %s: %w", name, err)
	}
	ib.volume = name
	return initSetup{volume: name}, nil
}

func noInitWarning(why string) string {
	return "this run has no init of the plugin's to stop it at its run_timeout (" + why + "); " +
		"only the plugin following the container stops it, so if the node following it dies the container runs on until an active node of this mount removes it"
}

// checkInitBinary hashes the binary and checks that it can run in any
// image: a static Linux executable.
func checkInitBinary(path string) (string, int64, error) {
	f, err := elf.Open(path)
	if err != nil {
		return "", 0, fmt.Errorf("the plugin binary %s cannot be read as a Linux executable: %v", path, err)
	}
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP {
			f.Close()
			return "", 0, fmt.Errorf("the plugin binary %s is dynamically linked, so it cannot run inside an arbitrary image: build it with CGO_ENABLED=0 (as `make build` does)", path)
		}
	}
	f.Close()
	r, err := os.Open(path)
	if err != nil {
		return "", 0, fmt.Errorf("reading the plugin binary %s: %v", path, err)
	}
	defer r.Close()
	h := sha256.New()
	n, err := io.Copy(h, r)
	if err != nil {
		return "", 0, fmt.Errorf("reading the plugin binary %s: %v", path, err)
	}
	return hex.EncodeToString(h.Sum(nil)), n, nil
}

// engineArch maps the engine's `uname -m` to Go's GOARCH.
var engineArch = map[string]string{
	"x86_64": "amd64", "amd64": "amd64",
	"aarch64": "arm64", "arm64": "arm64",
	"i386": "386", "i686": "386",
	"armv7l": "arm", "armv6l": "arm",
	"s390x": "s390x", "ppc64le": "ppc64le", "riscv64": "riscv64",
}

// engineFitsInit says why the plugin's binary (goos/goarch) cannot run on an
// engine of osType/arch, or "" when it can.
func engineFitsInit(osType, arch, goos, goarch string) string {
	if goos != "linux" {
		return fmt.Sprintf("the plugin runs on %s, and containers need a Linux init", goos)
	}
	if !strings.EqualFold(osType, "linux") {
		return fmt.Sprintf("the Docker engine runs %s containers, not Linux ones", osType)
	}
	if engineArch[strings.ToLower(arch)] != goarch {
		return fmt.Sprintf("the Docker engine's architecture %s is not the plugin's %s/%s", arch, goos, goarch)
	}
	return ""
}

// fillInitVolume creates the volume and, unless another runner created it
// (then it waits for that one to fill it), copies the binary and the ready
// mark into it.
func (d *Docker) fillInitVolume(ctx context.Context, ib *initBinary, name, image string) (err error) {
	token, err := randomHex(8)
	if err != nil {
		return err
	}
	create := client.VolumeCreateOptions{Name: name, Labels: map[string]string{labelManaged: "true", labelInitSHA: ib.sum, labelInitToken: token}}
	v, err := d.cli.VolumeCreate(ctx, create)
	if err == nil && v.Volume.Labels[labelInitSHA] != ib.sum {
		// Made empty by the engine when a run mounted it after someone
		// removed ours: replaced unless a container still uses it.
		if _, rmErr := d.cli.VolumeRemove(ctx, name, client.VolumeRemoveOptions{}); rmErr != nil {
			return fmt.Errorf("a volume of that name exists without the plugin's labels and cannot be replaced (%v): remove it with `docker volume rm %s`", rmErr, name)
		}
		v, err = d.cli.VolumeCreate(ctx, create)
	}
	if err != nil {
		return fmt.Errorf("creating the volume: %w", err)
	}
	suffix, err := randomHex(8)
	if err != nil {
		return err
	}
	helper := InitHelperNamePrefix + suffix
	created, err := d.cli.ContainerCreate(ctx, client.ContainerCreateOptions{
		Name: helper,
		Config: &container.Config{
			Image:      image,
			Entrypoint: []string{initDir + "/" + initproc.Name},
			Labels:     map[string]string{labelManaged: "true", labelInit: "helper"},
		},
		HostConfig: &container.HostConfig{Mounts: []mount.Mount{{Type: mount.TypeVolume, Source: name, Target: initDir}}},
	})
	if err != nil {
		return fmt.Errorf("creating a container to fill it (never started): %w", err)
	}
	defer func() {
		if rmErr := d.remove(ctx, created.ID); rmErr != nil && !cerrdefs.IsNotFound(rmErr) {
			err = errors.Join(err, fmt.Errorf("removing the helper container %s: %w", created.ID, rmErr))
		}
	}()
	if v.Volume.Labels[labelInitToken] != token {
		// Another runner created it: it is filling it now, or did.
		for end := time.Now().Add(initWaitForOther); ; {
			if d.initVolumeReady(ctx, created.ID, ib.sum) {
				return nil
			}
			if time.Now().After(end) || ctx.Err() != nil {
				break // that runner died half-way: fill it ourselves
			}
			select {
			case <-ctx.Done():
			case <-time.After(500 * time.Millisecond):
			}
		}
	} else if d.initVolumeReady(ctx, created.ID, ib.sum) {
		return nil
	}
	if err := d.copyTar(ctx, created.ID, false, func(w io.Writer) error { return initTar(w, ib) }); err != nil {
		return fmt.Errorf("copying the plugin binary: %w", err)
	}
	if !d.initVolumeReady(ctx, created.ID, ib.sum) {
		return errors.New("the copied binary is not marked ready in the volume")
	}
	return nil
}

// initTar writes the binary, then the ready mark (so a half-copied volume
// is never taken for a whole one), under initDir.
func initTar(w io.Writer, ib *initBinary) error {
	f, err := os.Open(ib.path)
	if err != nil {
		return err
	}
	defer f.Close()
	tw := tar.NewWriter(w)
	mod := time.Unix(0, 0)
	if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeDir, Name: initDir[1:] + "/", Mode: 0o755, ModTime: mod}); err != nil {
		return err
	}
	if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: initDir[1:] + "/" + initproc.Name, Mode: 0o755, Size: ib.size, ModTime: mod}); err != nil {
		return err
	}
	// A binary changed on disk since it was hashed fails the copy here.
	h := sha256.New()
	if _, err := io.CopyN(tw, io.TeeReader(f, h), ib.size); err != nil {
		return fmt.Errorf("reading %s: %w", ib.path, err)
	}
	if hex.EncodeToString(h.Sum(nil)) != ib.sum {
		return fmt.Errorf("the plugin binary %s changed while the plugin runs (an upgrade?): reload the plugin", ib.path)
	}
	if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: initDir[1:] + "/" + initReady, Mode: 0o644, Size: int64(len(ib.sum)), ModTime: mod}); err != nil {
		return err
	}
	if _, err := io.WriteString(tw, ib.sum); err != nil {
		return err
	}
	return tw.Close()
}

// initVolumeReady reads the ready mark through the helper container.
func (d *Docker) initVolumeReady(ctx context.Context, helperID, sum string) bool {
	res, err := d.cli.CopyFromContainer(ctx, helperID, client.CopyFromContainerOptions{SourcePath: initDir + "/" + initReady})
	if err != nil {
		return false
	}
	defer res.Content.Close()
	tr := tar.NewReader(res.Content)
	if _, err := tr.Next(); err != nil {
		return false
	}
	b, err := io.ReadAll(io.LimitReader(tr, 128))
	return err == nil && bytes.Equal(b, []byte(sum))
}

func randomHex(n int) (string, error) {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		return "", fmt.Errorf("generating a random token: %w", err)
	}
	return hex.EncodeToString(b), nil
}

// apply changes a run's container config to start under the init.
func (s initSetup) apply(cfg *container.Config, hc *container.HostConfig, deadline time.Time, timeout time.Duration) {
	if s.volume == "" {
		return
	}
	argv := append(append([]string{}, cfg.Entrypoint...), cfg.Cmd...)
	cfg.Entrypoint = append([]string{initDir + "/" + initproc.Name},
		initproc.Args(initproc.Config{Deadline: deadline, Timeout: timeout, Grace: KillGrace, Argv: argv})...)
	cfg.Cmd = nil
	cfg.Labels[labelInit] = "true"
	hc.Mounts = append(hc.Mounts, mount.Mount{Type: mount.TypeVolume, Source: s.volume, Target: initDir, ReadOnly: true,
		VolumeOptions: &mount.VolumeOptions{NoCopy: true}})
}

// initTimedOut tells the init's own timeout from a command that exited with
// the same code: the container must have ended at or after its deadline.
func initTimedOut(code int, deadline, now time.Time) bool {
	return code == ExitTimeout && !deadline.IsZero() && !now.Before(deadline.Add(-2*time.Second))
}
