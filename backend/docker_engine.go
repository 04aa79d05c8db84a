package backend

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/vault/sdk/logical"

	"github.com/flant/flant_gitops/container"
)

// dockerEngineEntry is the Docker engine the runs go to
// (configure/docker_engine). Absent means the local default.
type dockerEngineEntry struct {
	Host          string `json:"host"`
	CACert        string `json:"ca_cert,omitempty"`
	ClientCert    string `json:"client_cert,omitempty"`
	ClientKey     string `json:"client_key,omitempty"`
	TLSServerName string `json:"tls_server_name,omitempty"`
}

func (e *dockerEngineEntry) engine() container.Engine {
	if e == nil {
		return container.Engine{}
	}
	return container.Engine{
		Host:       e.Host,
		CACert:     []byte(e.CACert),
		ClientCert: []byte(e.ClientCert),
		ClientKey:  []byte(e.ClientKey),
		ServerName: e.TLSServerName,
	}
}

func getDockerEngine(ctx context.Context, s logical.Storage) (*dockerEngineEntry, error) {
	return getEntry[dockerEngineEntry](ctx, s, storageKeyDockerEngine)
}

// engineKey identifies an engine setting without keeping its key in clear.
func engineKey(e container.Engine) string {
	h := sha256.New()
	for _, f := range [][]byte{[]byte(e.Host), e.CACert, e.ClientCert, e.ClientKey, []byte(e.ServerName)} {
		fmt.Fprintf(h, "%d:%s;", len(f), f)
	}
	return hex.EncodeToString(h.Sum(nil))
}

// engineProbeTimeout bounds a check of the engine made for a request
// (status, a write of configure/docker_engine) or before a run.
const engineProbeTimeout = 10 * time.Second

// engineClient is one Docker client and the calls in flight on it.
type engineClient struct {
	key     string
	docker  *container.Docker
	refs    int
	retired bool
}

// engineConn keeps the Docker client of the configured engine. The watch
// worker reads it at each poll (ensure); when configure/docker_engine
// changed, a new client replaces the old one, which is closed once the calls
// still using it (a run in progress) have returned.
type engineConn struct {
	logger func() hclog.Logger
	// open connects to an engine; container.NewDocker except in tests.
	open func(ctx context.Context, e container.Engine) (*container.Docker, error)

	mu      sync.Mutex
	cur     *engineClient
	want    container.Engine // the setting last read from storage
	wantKey string
	lastErr error // why the last connection attempt failed
}

func newEngineConn(logger func() hclog.Logger) *engineConn {
	return &engineConn{
		logger: logger,
		open: func(ctx context.Context, e container.Engine) (*container.Docker, error) {
			return container.NewDocker(ctx, container.WithEngine(e))
		},
	}
}

// engineError says that the configured engine cannot be used now, and why.
type engineError struct {
	engine string
	err    error
}

func (e *engineError) Error() string {
	return fmt.Sprintf("the Docker engine (%s, see configure/docker_engine) cannot be used, so no run starts until it can: %v", e.engine, e.err)
}

func (e *engineError) Unwrap() error { return e.err }

// ensure reads the engine setting, switches to it when it changed, and
// checks that the engine answers. It returns the client to use.
func (c *engineConn) ensure(ctx context.Context, s logical.Storage) (*container.Docker, error) {
	entry, err := getDockerEngine(ctx, s)
	if err != nil {
		return nil, err
	}
	e := entry.engine()
	key := engineKey(e)
	c.mu.Lock()
	c.want, c.wantKey = e, key
	c.mu.Unlock()
	d, release, err := c.acquire(ctx)
	if err != nil {
		return nil, err
	}
	defer release()
	pctx, cancel := context.WithTimeout(ctx, engineProbeTimeout)
	defer cancel()
	if err := d.Ping(pctx); err != nil {
		c.mu.Lock()
		c.lastErr = err
		c.mu.Unlock()
		return nil, &engineError{engine: e.Describe(), err: err}
	}
	return d, nil
}

// acquire returns the client of the wanted engine, connecting when there is
// none yet; release must be called when the caller is done with it.
func (c *engineConn) acquire(ctx context.Context) (*container.Docker, func(), error) {
	c.mu.Lock()
	want, key := c.want, c.wantKey
	if cur := c.cur; cur != nil && cur.key == key {
		cur.refs++
		c.mu.Unlock()
		return cur.docker, c.releaser(cur), nil
	}
	c.mu.Unlock()

	octx, cancel := context.WithTimeout(ctx, engineProbeTimeout)
	defer cancel()
	d, err := c.open(octx, want)
	if err != nil {
		c.mu.Lock()
		c.lastErr = err
		c.mu.Unlock()
		return nil, nil, &engineError{engine: want.Describe(), err: err}
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if cur := c.cur; cur != nil && cur.key == key {
		// Another caller connected meanwhile: use its client.
		_ = d.Close()
		cur.refs++
		return cur.docker, c.releaser(cur), nil
	}
	if old := c.cur; old != nil {
		c.retireLocked(old)
		c.log().Info("the Docker engine setting changed: runs from now on go to the new engine", "engine", want.Describe())
	}
	nc := &engineClient{key: key, docker: d, refs: 1}
	c.cur = nc
	c.lastErr = nil
	return d, c.releaser(nc), nil
}

func (c *engineConn) releaser(ec *engineClient) func() {
	var once sync.Once
	return func() {
		once.Do(func() {
			c.mu.Lock()
			defer c.mu.Unlock()
			ec.refs--
			if ec.retired && ec.refs == 0 {
				c.closeClient(ec)
			}
		})
	}
}

// retireLocked takes ec out of use; it is closed when its last call returns.
func (c *engineConn) retireLocked(ec *engineClient) {
	ec.retired = true
	if c.cur == ec {
		c.cur = nil
	}
	if ec.refs == 0 {
		c.closeClient(ec)
	}
}

func (c *engineConn) closeClient(ec *engineClient) {
	if err := ec.docker.Close(); err != nil {
		c.log().Warn("closing the Docker client", "error", err)
	}
}

// close releases the client when the worker stops; a later use connects
// again.
func (c *engineConn) close() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.cur != nil {
		c.retireLocked(c.cur)
	}
	return nil
}

func (c *engineConn) log() hclog.Logger {
	if c.logger != nil {
		if l := c.logger(); l != nil {
			return l.Named("docker_engine")
		}
	}
	return hclog.NewNullLogger()
}

// status is the `engine` object of flant_gitops/status: which engine, who it
// says it is, or why it cannot be used.
func (c *engineConn) status(ctx context.Context, s logical.Storage) (map[string]any, error) {
	entry, err := getDockerEngine(ctx, s)
	if err != nil {
		return nil, err
	}
	out := map[string]any{"host": entry.engine().Describe(), "reachable": false}
	pctx, cancel := context.WithTimeout(ctx, engineProbeTimeout)
	defer cancel()
	d, err := c.ensure(pctx, s)
	if err == nil {
		var info container.EngineInfo
		release := func() {}
		d, release, err = c.acquire(pctx)
		if err == nil {
			info, err = d.EngineInfo(pctx)
			release()
		}
		if err == nil {
			out["reachable"] = true
			out["id"], out["name"], out["version"] = info.ID, info.Name, info.ServerVersion
			return out, nil
		}
	}
	var ee *engineError
	if errors.As(err, &ee) {
		err = ee.err
	}
	out["error"] = err.Error()
	return out, nil
}

// engineRunner is the watch worker's container.Runner: every call goes to
// the engine configured when it is made, so the worker keeps one runner for
// its lifetime and still follows a change of configure/docker_engine.
type engineRunner struct{ c *engineConn }

var (
	_ container.Runner = engineRunner{}
	_ io.Closer        = engineRunner{}
)

func (r engineRunner) Run(ctx context.Context, spec container.Spec) (container.Result, error) {
	d, release, err := r.c.acquire(ctx)
	if err != nil {
		return container.Result{}, err
	}
	defer release()
	return d.Run(ctx, spec)
}

func (r engineRunner) Find(ctx context.Context, labels map[string]string) ([]container.Found, error) {
	d, release, err := r.c.acquire(ctx)
	if err != nil {
		return nil, err
	}
	defer release()
	return d.Find(ctx, labels)
}

func (r engineRunner) Attach(ctx context.Context, id string, log io.Writer, since time.Time, timeout time.Duration) (container.Result, error) {
	d, release, err := r.c.acquire(ctx)
	if err != nil {
		return container.Result{}, err
	}
	defer release()
	return d.Attach(ctx, id, log, since, timeout)
}

func (r engineRunner) Remove(ctx context.Context, id string) error {
	d, release, err := r.c.acquire(ctx)
	if err != nil {
		return err
	}
	defer release()
	return d.Remove(ctx, id)
}

func (r engineRunner) EngineID(ctx context.Context) (string, error) {
	d, release, err := r.c.acquire(ctx)
	if err != nil {
		return "", err
	}
	defer release()
	return d.EngineID(ctx)
}

// Close releases the engine's client when the worker ends.
func (r engineRunner) Close() error { return r.c.close() }
