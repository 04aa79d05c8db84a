// Package vaulttest runs a real `vault server -dev` for tests, with the
// freshly built flant_gitops plugin registered (by sha256 and version) and
// enabled at flant_gitops/, in the style of net/http/httptest.
//
// The Vault binary is taken from $VAULT_BINARY, <repo>/bin/vault or PATH, in
// that order; when none exists it is built from the pinned module in
// scripts/vaultbin (about 8 minutes on a cold module cache).
//
// With VAULTTEST_RACE=1 the plugin is built with the race detector and a test
// whose server log holds a race report fails; the default build is unchanged.
package vaulttest

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/hashicorp/vault/api"
)

const (
	// PluginName is the catalog name and the mount type of the plugin.
	PluginName = "flant_gitops"
	// PluginVersion is linked into the test build of the plugin and used
	// to register it; Vault checks that the two agree.
	PluginVersion = "v0.1.0-vaulttest"
	// MountPath is where the plugin is enabled.
	MountPath = "flant_gitops"

	pluginPackage = "./cmd/flant_gitops"
	versionSymbol = "github.com/flant/flant_gitops/backend.Version"
	modulePath    = "github.com/flant/flant_gitops"

	startTimeout = 60 * time.Second
	stopTimeout  = 15 * time.Second

	// raceEnv opts in to a race-detector build of the plugin.
	raceEnv = "VAULTTEST_RACE"
	// raceReport starts every report the race detector writes to the
	// plugin's stderr, which Vault relays into its log.
	raceReport = "WARNING: DATA RACE"
)

// Options change how a server is started. The zero value starts a plain HTTP
// dev server with the plugin enabled.
type Options struct {
	// NoPlugin starts Vault without building, registering or enabling the
	// plugin, e.g. as the "target Vault" of AppRole vault requests.
	NoPlugin bool
	// TLS serves HTTPS with a CA and certificate that Vault generates
	// (-dev-tls); CACertPath and CACertPEM expose the CA.
	TLS bool
	// Env is added to the environment of the Vault process. Plugin
	// processes inherit Vault's environment, so this reaches the plugin too.
	Env []string
	// Config is extra server configuration in HCL (for example a second
	// listener with a certificate of the test's own), given with -config.
	Config string
	// LogLevel of the Vault server (and of plugin output it relays);
	// default "debug" so that tests looking for leaked secrets see
	// everything the plugin logs.
	LogLevel string
	// PluginVersions are more versions of the plugin, each built with its
	// version linked in and registered in the catalog as the command
	// flant_gitops-<version> beside PluginVersion, which the mount runs:
	// what an upgrade or a downgrade moves the mount to. Server.PluginSHA256s
	// has their sums.
	PluginVersions []string
}

// Server is a running dev Vault. Fields are read-only.
type Server struct {
	// Addr is the API address, e.g. http://127.0.0.1:41234.
	Addr string
	// Token is the root token.
	Token string
	// Client talks to Addr with Token.
	Client *api.Client
	// LogPath is the server log; plugin stderr is relayed into it.
	LogPath string
	// CACertPath and CACertPEM are set with Options.TLS.
	CACertPath string
	CACertPEM  string
	// PluginSHA256 is the hex sha256 of the registered plugin binary
	// (empty with Options.NoPlugin).
	PluginSHA256 string
	// PluginSHA256s are the sums of every registered version by version:
	// PluginVersion and Options.PluginVersions.
	PluginSHA256s map[string]string
	// VaultBinary is the vault executable in use.
	VaultBinary string

	cmd  *exec.Cmd
	done chan struct{}
}

// NewServer starts a dev Vault and, unless opts.NoPlugin, registers and
// enables the plugin. Everything is stopped by t.Cleanup; a failed test gets
// the tail of the server log.
func NewServer(t testing.TB, opts *Options) *Server {
	t.Helper()
	if opts == nil {
		opts = &Options{}
	}
	root := RepoRoot(t)
	vaultBin := VaultBinary(t)
	var pluginDir, pluginSHA string
	var sums map[string]string
	if !opts.NoPlugin {
		pluginDir, pluginSHA = buildPlugin(t, root)
		sums = map[string]string{PluginVersion: pluginSHA}
		if len(opts.PluginVersions) > 0 {
			pluginDir, sums = buildPluginVersions(t, root, opts.PluginVersions)
		}
	}

	var s *Server
	var err error
	// A free port can be taken between probing and binding (the dev server
	// also binds port+1 for cluster traffic), so retry on bind failures.
	for attempt := 0; attempt < 3; attempt++ {
		s, err = start(t, vaultBin, pluginDir, opts)
		if err == nil || !errors.Is(err, errAddrInUse) {
			break
		}
	}
	if err != nil {
		t.Fatalf("vaulttest: %v", err)
	}
	s.PluginSHA256 = pluginSHA
	s.PluginSHA256s = sums
	if !opts.NoPlugin {
		s.enablePlugin(t, opts.PluginVersions)
	}
	return s
}

var errAddrInUse = errors.New("address already in use")

func start(t testing.TB, vaultBin, pluginDir string, opts *Options) (*Server, error) {
	port, err := freePort()
	if err != nil {
		return nil, err
	}
	dir := t.TempDir()
	logPath := filepath.Join(dir, "vault.log")
	logFile, err := os.Create(logPath)
	if err != nil {
		return nil, fmt.Errorf("create server log: %w", err)
	}
	defer logFile.Close()

	token := "root-" + randomHex(8)
	level := opts.LogLevel
	if level == "" {
		level = "debug"
	}
	args := []string{
		"server", "-dev",
		"-dev-listen-address=" + fmt.Sprintf("127.0.0.1:%d", port),
		"-dev-root-token-id=" + token,
		// Keep the developer's ~/.vault-token untouched.
		"-dev-no-store-token",
		"-log-level=" + level,
	}
	if pluginDir != "" {
		args = append(args, "-dev-plugin-dir="+pluginDir)
	}
	scheme := "http"
	var caPath string
	if opts.TLS {
		certDir := filepath.Join(dir, "tls")
		if err := os.Mkdir(certDir, 0o700); err != nil {
			return nil, fmt.Errorf("create TLS dir: %w", err)
		}
		args = append(args, "-dev-tls", "-dev-tls-cert-dir="+certDir)
		scheme = "https"
		caPath = filepath.Join(certDir, "vault-ca.pem")
	}

	if opts.Config != "" {
		cfgFile := filepath.Join(dir, "extra.hcl")
		if err := os.WriteFile(cfgFile, []byte(opts.Config), 0o600); err != nil {
			return nil, fmt.Errorf("write server config: %w", err)
		}
		args = append(args, "-config="+cfgFile)
	}

	cmd := exec.Command(vaultBin, args...)
	cmd.Env = append(serverEnviron(), opts.Env...)
	racePrefix := filepath.Join(dir, "race")
	if os.Getenv(raceEnv) == "1" {
		// Reports go to files too, whatever the log level relays of the
		// plugin's stderr; halt_on_error=0 lets the test see them all.
		cmd.Env = append(cmd.Env, "GORACE=log_path="+racePrefix+" halt_on_error=0")
	}
	cmd.Stdout = logFile
	cmd.Stderr = logFile
	// Own process group: Vault and its plugin processes are stopped
	// together; Pdeathsig stops Vault if the test binary dies.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", vaultBin, err)
	}
	s := &Server{
		Addr:        fmt.Sprintf("%s://127.0.0.1:%d", scheme, port),
		Token:       token,
		LogPath:     logPath,
		CACertPath:  caPath,
		VaultBinary: vaultBin,
		cmd:         cmd,
		done:        make(chan struct{}),
	}
	go func() {
		_ = cmd.Wait()
		close(s.done)
	}()
	t.Cleanup(func() {
		s.stop(t)
		if r := raceReports(s.Log()) + raceFiles(racePrefix); r != "" {
			t.Errorf("vaulttest: the race detector reported in the plugin:\n%s", r)
		}
		if t.Failed() {
			t.Logf("vaulttest: last lines of %s:\n%s", s.LogPath, tail(s.Log(), 60))
		}
	})

	if err := s.waitReady(); err != nil {
		if strings.Contains(s.Log(), "address already in use") {
			return nil, fmt.Errorf("%w: %v", errAddrInUse, err)
		}
		return nil, fmt.Errorf("vault server did not become ready: %v\n%s", err, tail(s.Log(), 40))
	}
	return s, nil
}

func (s *Server) waitReady() error {
	deadline := time.Now().Add(startTimeout)
	var lastErr error
	for time.Now().Before(deadline) {
		select {
		case <-s.done:
			return fmt.Errorf("vault exited early: %v", s.cmd.ProcessState)
		default:
		}
		if s.Client == nil && s.CACertPath != "" {
			if _, err := os.Stat(s.CACertPath); err != nil {
				time.Sleep(50 * time.Millisecond)
				continue
			}
		}
		if s.Client == nil {
			// The dev TLS CA may still be being written: retry.
			c, err := s.newClient()
			if err != nil {
				lastErr = err
				time.Sleep(100 * time.Millisecond)
				continue
			}
			s.Client = c
		}
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		h, err := s.Client.Sys().HealthWithContext(ctx)
		cancel()
		if err == nil && h.Initialized && !h.Sealed {
			return nil
		}
		lastErr = err
		time.Sleep(100 * time.Millisecond)
	}
	return fmt.Errorf("not healthy after %s: %v", startTimeout, lastErr)
}

func (s *Server) newClient() (*api.Client, error) {
	cfg := api.DefaultConfig()
	cfg.Address = s.Addr
	cfg.MaxRetries = 0
	if s.CACertPath != "" {
		pem, err := os.ReadFile(s.CACertPath)
		if err != nil {
			return nil, fmt.Errorf("read dev TLS CA: %w", err)
		}
		s.CACertPEM = string(pem)
		if err := cfg.ConfigureTLS(&api.TLSConfig{CACert: s.CACertPath}); err != nil {
			return nil, fmt.Errorf("configure TLS client: %w", err)
		}
	}
	c, err := api.NewClient(cfg)
	if err != nil {
		return nil, fmt.Errorf("new vault client: %w", err)
	}
	c.SetToken(s.Token)
	return c, nil
}

// enablePlugin registers the plugin with its sha256 and version, and each of
// more versions as flant_gitops-<version>, and mounts PluginVersion.
func (s *Server) enablePlugin(t testing.TB, more []string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), startTimeout)
	defer cancel()
	err := s.Client.Sys().RegisterPluginWithContext(ctx, &api.RegisterPluginInput{
		Name:    PluginName,
		Type:    api.PluginTypeSecrets,
		Command: PluginName,
		SHA256:  s.PluginSHA256,
		Version: PluginVersion,
	})
	if err != nil {
		t.Fatalf("vaulttest: register plugin: %v\n%s", err, tail(s.Log(), 40))
	}
	for _, v := range more {
		err := s.Client.Sys().RegisterPluginWithContext(ctx, &api.RegisterPluginInput{
			Name:    PluginName,
			Type:    api.PluginTypeSecrets,
			Command: versionCommand(v),
			SHA256:  s.PluginSHA256s[v],
			Version: v,
		})
		if err != nil {
			t.Fatalf("vaulttest: register plugin version %s: %v\n%s", v, err, tail(s.Log(), 40))
		}
	}
	err = s.Client.Sys().MountWithContext(ctx, MountPath, &api.MountInput{
		Type:   PluginName,
		Config: api.MountConfigInput{PluginVersion: PluginVersion},
	})
	if err != nil {
		t.Fatalf("vaulttest: enable plugin at %s/: %v\n%s", MountPath, err, tail(s.Log(), 40))
	}
}

// ReloadPlugin restarts the plugin process behind the mount (sys/plugins/
// reload) and waits until the mount answers again. Storage survives.
func (s *Server) ReloadPlugin(t testing.TB) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), startTimeout)
	defer cancel()
	if _, err := s.Client.Sys().ReloadPluginWithContext(ctx, &api.ReloadPluginInput{Plugin: PluginName}); err != nil {
		t.Fatalf("vaulttest: reload plugin: %v", err)
	}
	for {
		_, err := s.Client.Logical().ReadWithContext(ctx, MountPath+"/configure")
		if err == nil {
			return
		}
		if ctx.Err() != nil {
			t.Fatalf("vaulttest: mount did not answer after reload: %v\n%s", err, tail(s.Log(), 40))
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// CLI runs the vault binary against this server (VAULT_ADDR, VAULT_TOKEN and
// VAULT_CACERT set) and returns its output and exit code.
func (s *Server) CLI(t testing.TB, args ...string) (stdout, stderr string, exitCode int) {
	t.Helper()
	return s.CLIStdin(t, "", args...)
}

// CLIStdin is CLI with stdin, for commands that take `-` as data.
func (s *Server) CLIStdin(t testing.TB, stdin string, args ...string) (stdout, stderr string, exitCode int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, s.VaultBinary, args...)
	cmd.Env = s.CLIEnv()
	cmd.Stdin = strings.NewReader(stdin)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	var exitErr *exec.ExitError
	switch {
	case errors.As(err, &exitErr):
		return out.String(), errb.String(), exitErr.ExitCode()
	case err != nil:
		t.Fatalf("vaulttest: run vault %s: %v", strings.Join(args, " "), err)
	}
	return out.String(), errb.String(), 0
}

// CLIEnv is the environment under which CLI runs the vault binary.
func (s *Server) CLIEnv() []string {
	env := make([]string, 0, len(os.Environ())+4)
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "VAULT_") {
			env = append(env, kv)
		}
	}
	env = append(env, "VAULT_ADDR="+s.Addr, "VAULT_TOKEN="+s.Token, "NO_COLOR=1")
	if s.CACertPath != "" {
		env = append(env, "VAULT_CACERT="+s.CACertPath)
	}
	return env
}

// Log returns the server log so far.
func (s *Server) Log() string {
	b, err := os.ReadFile(s.LogPath)
	if err != nil {
		return fmt.Sprintf("(cannot read %s: %v)", s.LogPath, err)
	}
	return string(b)
}

// Pid is the process ID of the Vault server, which also leads the process
// group of Vault and its plugins that the cleanup stops.
func (s *Server) Pid() int { return s.cmd.Process.Pid }

// stop terminates the process group (Vault and its plugins) and makes sure
// nothing of it is left.
func (s *Server) stop(t testing.TB) {
	pgid := s.cmd.Process.Pid
	_ = syscall.Kill(-pgid, syscall.SIGTERM)
	select {
	case <-s.done:
	case <-time.After(stopTimeout):
		t.Logf("vaulttest: vault did not stop within %s after SIGTERM; killing it", stopTimeout)
	}
	// Plugin processes may outlive Vault by a moment; the group kill takes
	// them too.
	_ = syscall.Kill(-pgid, syscall.SIGKILL)
	<-s.done
	deadline := time.Now().Add(stopTimeout)
	for syscall.Kill(-pgid, 0) == nil {
		if time.Now().After(deadline) {
			t.Errorf("vaulttest: processes of group %d still alive after SIGKILL", pgid)
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// RepoRoot finds the root of the flant_gitops module from the working
// directory of the test.
func RepoRoot(t testing.TB) string {
	t.Helper()
	dir, err := os.Getwd()
	if err != nil {
		t.Fatalf("vaulttest: getwd: %v", err)
	}
	for {
		if b, err := os.ReadFile(filepath.Join(dir, "go.mod")); err == nil {
			if firstLine(string(b)) == "module "+modulePath {
				return dir
			}
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			t.Fatalf("vaulttest: no go.mod of %s above the working directory", modulePath)
		}
		dir = parent
	}
}

// VaultBinary returns a vault executable: $VAULT_BINARY, <repo>/bin/vault,
// `vault` on PATH, or one built into <repo>/bin/vault from scripts/vaultbin.
func VaultBinary(t testing.TB) string {
	t.Helper()
	if p := os.Getenv("VAULT_BINARY"); p != "" {
		if _, err := os.Stat(p); err != nil {
			t.Fatalf("vaulttest: VAULT_BINARY=%s: %v", p, err)
		}
		return p
	}
	root := RepoRoot(t)
	local := filepath.Join(root, "bin", "vault")
	if isExecutable(local) {
		return local
	}
	if p, err := exec.LookPath("vault"); err == nil {
		return p
	}
	if err := buildVault(root, local); err != nil {
		t.Fatalf("vaulttest: no vault binary (looked at $VAULT_BINARY, %s, PATH) and building one failed: %v\nrun `make bin/vault` to see the build", local, err)
	}
	return local
}

// buildVault builds the pinned Vault under a file lock, so that test
// binaries running in parallel build it once.
func buildVault(root, out string) error {
	if err := os.MkdirAll(filepath.Dir(out), 0o755); err != nil {
		return fmt.Errorf("create %s: %w", filepath.Dir(out), err)
	}
	lock, err := os.OpenFile(out+".lock", os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		return fmt.Errorf("open build lock: %w", err)
	}
	defer lock.Close()
	if err := syscall.Flock(int(lock.Fd()), syscall.LOCK_EX); err != nil {
		return fmt.Errorf("take build lock: %w", err)
	}
	defer func() { _ = syscall.Flock(int(lock.Fd()), syscall.LOCK_UN) }()
	if isExecutable(out) {
		return nil
	}
	tmp := out + ".tmp"
	cmd := exec.Command("go", "build", "-o", tmp, ".")
	cmd.Dir = filepath.Join(root, "scripts", "vaultbin")
	if b, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("go build in %s: %w\n%s", cmd.Dir, err, b)
	}
	if err := os.Rename(tmp, out); err != nil {
		return fmt.Errorf("install %s: %w", out, err)
	}
	return nil
}

// pluginBuild is the plugin built once per test binary and version:
// building takes seconds and every server of the process can share the
// read-only result.
type pluginBuild struct {
	once sync.Once
	dir  string
	sum  string
	err  error
}

var (
	plugin pluginBuild

	versionBuildsMu sync.Mutex
	versionBuilds   = map[string]*pluginBuild{}
)

// versionCommand is the file name of a version's binary in the plugin
// directory, the command it is registered with.
func versionCommand(version string) string { return PluginName + "-" + version }

// buildPluginVersions returns a plugin directory holding the PluginVersion
// build as flant_gitops and each of versions as flant_gitops-<version>, and
// every version's sha256. Like a single build it is named by content.
func buildPluginVersions(t testing.TB, root string, versions []string) (string, map[string]string) {
	t.Helper()
	dir, sum := buildPlugin(t, root)
	files := map[string]string{PluginName: filepath.Join(dir, PluginName)}
	sums := map[string]string{PluginVersion: sum}
	for _, v := range versions {
		if v == PluginVersion || versionCommand(v) == PluginName || strings.ContainsAny(v, "/\\") {
			t.Fatalf("vaulttest: plugin version %q: give versions other than %s, without slashes", v, PluginVersion)
		}
		versionBuildsMu.Lock()
		b := versionBuilds[v]
		if b == nil {
			b = &pluginBuild{}
			versionBuilds[v] = b
		}
		versionBuildsMu.Unlock()
		b.once.Do(func() { b.dir, b.sum, b.err = doBuildPlugin(root, v) })
		if b.err != nil {
			t.Fatalf("vaulttest: build plugin %s: %v", v, b.err)
		}
		files[versionCommand(v)] = filepath.Join(b.dir, PluginName)
		sums[v] = b.sum
	}
	set, err := linkPluginSet(filepath.Join(root, ".cache", "vaulttest"), files)
	if err != nil {
		t.Fatalf("vaulttest: %v", err)
	}
	return set, sums
}

// linkPluginSet makes (or finds) the directory cache/set-<digest> holding
// files (name: source) as hard links, or copies across file systems.
func linkPluginSet(cache string, files map[string]string) (string, error) {
	names := make([]string, 0, len(files))
	for n := range files {
		names = append(names, n)
	}
	sort.Strings(names)
	h := sha256.New()
	for _, n := range names {
		fmt.Fprintf(h, "%s %s\n", n, files[n])
	}
	final := filepath.Join(cache, "set-"+hex.EncodeToString(h.Sum(nil))[:16])
	if _, err := os.Stat(final); err == nil {
		// Touched, so that pruneOldBuilds leaves a set in use alone.
		now := time.Now()
		_ = os.Chtimes(final, now, now)
		return final, nil
	}
	tmp, err := os.MkdirTemp(cache, "set-build-")
	if err != nil {
		return "", fmt.Errorf("create plugin set dir: %w", err)
	}
	defer os.RemoveAll(tmp)
	for _, n := range names {
		dst := filepath.Join(tmp, n)
		if err := os.Link(files[n], dst); err != nil {
			if err := copyFile(files[n], dst); err != nil {
				return "", err
			}
		}
	}
	if err := os.Rename(tmp, final); err != nil {
		if _, statErr := os.Stat(final); statErr != nil {
			return "", fmt.Errorf("install plugin set into %s: %w", final, err)
		}
	}
	return final, nil
}

func copyFile(src, dst string) error {
	in, err := os.Open(src)
	if err != nil {
		return fmt.Errorf("open %s: %w", src, err)
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_CREATE|os.O_WRONLY|os.O_EXCL, 0o755)
	if err != nil {
		return fmt.Errorf("create %s: %w", dst, err)
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return fmt.Errorf("copy %s to %s: %w", src, dst, err)
	}
	return out.Close()
}

// buildPlugin returns a directory holding only the plugin binary (the dev
// server's plugin directory) and the binary's sha256. The directory is named
// by content under <repo>/.cache/vaulttest, so parallel test binaries share
// identical builds and never overwrite a binary another one runs.
func buildPlugin(t testing.TB, root string) (dir, sum string) {
	t.Helper()
	plugin.once.Do(func() {
		plugin.dir, plugin.sum, plugin.err = doBuildPlugin(root, PluginVersion)
	})
	if plugin.err != nil {
		t.Fatalf("vaulttest: build plugin: %v", plugin.err)
	}
	return plugin.dir, plugin.sum
}

func doBuildPlugin(root, version string) (string, string, error) {
	cache := filepath.Join(root, ".cache", "vaulttest")
	if err := os.MkdirAll(cache, 0o755); err != nil {
		return "", "", fmt.Errorf("create %s: %w", cache, err)
	}
	tmpDir, err := os.MkdirTemp(cache, "build-")
	if err != nil {
		return "", "", fmt.Errorf("create build dir: %w", err)
	}
	defer os.RemoveAll(tmpDir)
	bin := filepath.Join(tmpDir, PluginName)
	cmd := exec.Command("go", pluginBuildArgs(os.Getenv(raceEnv), version, bin)...)
	cmd.Dir = root
	if os.Getenv(raceEnv) != "1" {
		// Static, as `make build` builds it: the plugin binary is also the
		// init of its run containers (the race detector needs cgo).
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	}
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", "", fmt.Errorf("go build %s: %w\n%s", pluginPackage, err, out)
	}
	sum, err := fileSHA256(bin)
	if err != nil {
		return "", "", err
	}
	final := filepath.Join(cache, sum[:16])
	if err := os.Rename(tmpDir, final); err != nil {
		// Another test binary installed the same content first.
		if _, statErr := os.Stat(filepath.Join(final, PluginName)); statErr != nil {
			return "", "", fmt.Errorf("install plugin build into %s: %w", final, err)
		}
	}
	pruneOldBuilds(cache, final)
	return final, sum, nil
}

// pluginBuildArgs are the `go build` arguments for the plugin at version;
// race is the value of VAULTTEST_RACE ("1" adds -race).
func pluginBuildArgs(race, version, out string) []string {
	args := []string{"build", "-trimpath"}
	if race == "1" {
		args = append(args, "-race")
	}
	return append(args, "-ldflags", "-X "+versionSymbol+"="+version, "-o", out, pluginPackage)
}

// raceReports returns the race detector's reports found in a server log, or
// "". Vault prefixes each relayed plugin line, so a report runs from its
// header line to the next line ending in the detector's row of equals signs.
func raceReports(log string) string {
	var b strings.Builder
	in := false
	for _, line := range strings.Split(log, "\n") {
		switch {
		case strings.Contains(line, raceReport):
			in = true
		case in && strings.HasSuffix(strings.TrimSpace(line), "=================="):
			in = false
			b.WriteString(line + "\n")
		}
		if in {
			b.WriteString(line + "\n")
		}
	}
	return b.String()
}

// raceFiles returns the reports the race detector wrote to prefix.<pid>
// (GORACE log_path), or "".
func raceFiles(prefix string) string {
	paths, _ := filepath.Glob(prefix + ".*")
	var b strings.Builder
	for _, p := range paths {
		data, err := os.ReadFile(p)
		if err != nil {
			fmt.Fprintf(&b, "(cannot read race report %s: %v)\n", p, err)
			continue
		}
		if strings.Contains(string(data), raceReport) {
			b.WriteString(p + ":\n" + string(data))
		}
	}
	return b.String()
}

// pruneOldBuilds removes builds of older sources after a day, when no test
// can still be running them.
func pruneOldBuilds(cache, keep string) {
	entries, err := os.ReadDir(cache)
	if err != nil {
		return
	}
	for _, e := range entries {
		p := filepath.Join(cache, e.Name())
		info, err := e.Info()
		if err != nil || p == keep || time.Since(info.ModTime()) < 24*time.Hour {
			continue
		}
		_ = os.RemoveAll(p)
	}
}

func fileSHA256(path string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", fmt.Errorf("open %s: %w", path, err)
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return "", fmt.Errorf("hash %s: %w", path, err)
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

// serverEnviron is the test's environment without its VAULT_* settings, so
// that a test that points clients elsewhere (VAULT_CACERT, VAULT_SKIP_VERIFY)
// never changes how a server starts; Options.Env sets them on purpose.
func serverEnviron() []string {
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "VAULT_") {
			env = append(env, kv)
		}
	}
	return env
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("find a free port: %w", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b) // never fails on Linux
	return hex.EncodeToString(b)
}

func isExecutable(p string) bool {
	info, err := os.Stat(p)
	return err == nil && !info.IsDir() && info.Mode()&0o111 != 0
}

func firstLine(s string) string {
	line, _, _ := strings.Cut(s, "\n")
	return strings.TrimSpace(line)
}

func tail(s string, n int) string {
	var lines []string
	sc := bufio.NewScanner(strings.NewReader(s))
	sc.Buffer(make([]byte, 0, 64*1024), 1024*1024)
	for sc.Scan() {
		lines = append(lines, sc.Text())
	}
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
