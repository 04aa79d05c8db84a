package container

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"maps"
	"sort"
	"sync"
	"time"

	cerrdefs "github.com/containerd/errdefs"
	"github.com/moby/moby/api/pkg/stdcopy"
	"github.com/moby/moby/api/types/container"
	"github.com/moby/moby/client"
)

// runScript runs each positional parameter with its own /bin/sh -c and stops
// at the first failure with its exit code. Commands travel as arguments, never
// spliced into the script, so no quoting can break out and nothing is echoed.
const runScript = `for c in "$@"; do /bin/sh -c "$c" || exit $?; done`

// Docker is a Runner on the Docker Engine API.
type Docker struct {
	cli            *client.Client
	engine         Engine
	cleanupTimeout time.Duration
	logDrain       time.Duration
	init           *initBinary // nil: runs have no init of ours
}

var _ Runner = (*Docker)(nil)

// Option configures NewDocker.
type Option func(*dockerOptions)

type dockerOptions struct {
	engine         Engine
	cleanupTimeout time.Duration
	pingTimeout    time.Duration
	init           string
	initSet        bool
}

// NewDocker connects to the Docker engine named by WithEngine or, by
// default, by the environment (DOCKER_HOST, DOCKER_TLS_VERIFY,
// DOCKER_CERT_PATH), negotiates the API version and checks that the engine
// answers.
func NewDocker(ctx context.Context, opts ...Option) (*Docker, error) {
	o := dockerOptions{cleanupTimeout: 30 * time.Second, pingTimeout: 15 * time.Second}
	for _, opt := range opts {
		opt(&o)
	}
	copts, err := o.clientOptions(time.Now())
	if err != nil {
		return nil, err
	}
	cli, err := client.New(copts...)
	if err != nil {
		return nil, fmt.Errorf("configuring the Docker client: %w", err)
	}
	d := &Docker{cli: cli, engine: o.engine, cleanupTimeout: o.cleanupTimeout, logDrain: 5 * time.Second}
	if path := defaultInitPath(o); path != "" {
		d.init = &initBinary{path: path}
	}
	pctx, cancel := context.WithTimeout(ctx, o.pingTimeout)
	defer cancel()
	if _, err := cli.Ping(pctx, client.PingOptions{NegotiateAPIVersion: true}); err != nil {
		err = d.explain(err)
		_ = cli.Close()
		return nil, err
	}
	return d, nil
}

// Client exposes the engine client, for helpers such as dockertest.
func (d *Docker) Client() *client.Client { return d.cli }

// Close releases the client's connections.
func (d *Docker) Close() error { return d.cli.Close() }

// cleanupContext outlives the caller's cancellation but stays bounded.
func (d *Docker) cleanupContext(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.WithoutCancel(ctx), d.cleanupTimeout)
}

// Run implements Runner.
func (d *Docker) Run(ctx context.Context, spec Spec) (res Result, err error) {
	if err := spec.validate(); err != nil {
		return Result{}, err
	}
	if ctx.Err() != nil {
		return Result{Reason: ReasonCanceled}, nil
	}
	img, err := d.cli.ImageInspect(ctx, spec.Image)
	if err != nil {
		if cerrdefs.IsNotFound(err) {
			return Result{}, fmt.Errorf("%w: %s (this runner never pulls: load it with docker load or docker import on the Docker host)", ErrImageMissing, spec.Image)
		}
		return canceledOr(ctx, Result{}, fmt.Errorf("inspecting image %s: %w", spec.Image, err))
	}

	setup, err := d.prepareInit(ctx, img.ID)
	if err != nil {
		return canceledOr(ctx, Result{}, err)
	}
	res.Warning = setup.warning
	if setup.warning != "" {
		writeNote(spec.Log, setup.warning)
	}
	if spec.Deadline.IsZero() {
		spec.Deadline = time.Now().Add(spec.Timeout)
	}

	name, err := containerName()
	if err != nil {
		return res, err
	}
	created, err := d.cli.ContainerCreate(ctx, d.createOptions(name, img.ID, &spec, setup))
	if err != nil {
		// The engine may have created it before the reply was lost: remove by name.
		rmErr := d.remove(ctx, name)
		if cerrdefs.IsNotFound(rmErr) {
			rmErr = nil
		}
		return canceledOr(ctx, res, errors.Join(fmt.Errorf("creating the container from %s: %w", spec.Image, err), rmErr))
	}
	res.ContainerID = created.ID
	defer func() {
		if errors.Is(err, ErrLeftRunning) {
			return // handed over: the next follower removes it
		}
		if rmErr := d.remove(ctx, created.ID); rmErr != nil && !cerrdefs.IsNotFound(rmErr) {
			err = errors.Join(err, fmt.Errorf("removing container %s: %w", created.ID, rmErr))
		}
	}()

	if err := d.copyFiles(ctx, created.ID, &spec); err != nil {
		return canceledOr(ctx, res, err)
	}

	// The wait is set up before start so a fast exit cannot be missed; it
	// outlives ctx so a kill still reports.
	waitCtx, stopWait := context.WithCancel(context.WithoutCancel(ctx))
	defer stopWait()
	wait := d.cli.ContainerWait(waitCtx, created.ID, client.ContainerWaitOptions{Condition: container.WaitConditionNextExit})

	// A cancel that lands while the start request is in flight must not cut
	// it: the container may already run, and follow then kills it and
	// reports the real exit instead of a canceled start with no exit code.
	startCtx, stopStart := d.cleanupContext(ctx)
	_, err = d.cli.ContainerStart(startCtx, created.ID, client.ContainerStartOptions{})
	stopStart()
	if err != nil {
		return canceledOr(ctx, res, fmt.Errorf("starting container %s: %w", created.ID, err))
	}
	res.Started = time.Now()
	// The output is read from the engine's log, which keeps it from the
	// first line, with the engine's timestamps: an Attach after a restart
	// continues from the last line the caller kept.
	logs, err := d.openLogs(ctx, created.ID, time.Time{}, true, spec.Log)
	if err != nil {
		// The run goes on without its output rather than leave the container.
		logs = noLogs()
		writeNote(spec.Log, fmt.Sprintf("the container's output cannot be read: %v", err))
	}
	defer logs.stop()
	var initDue time.Time
	if setup.volume != "" {
		initDue = minTime(spec.Deadline, res.Started.Add(spec.Timeout))
	}
	return d.follow(ctx, res, wait, logs, spec.Timeout, initDue)
}

func (d *Docker) createOptions(name, image string, spec *Spec, setup initSetup) client.ContainerCreateOptions {
	labels := maps.Clone(spec.Labels)
	if labels == nil {
		labels = map[string]string{}
	}
	labels[labelManaged] = "true"
	if !spec.Deadline.IsZero() {
		labels[labelDeadline] = spec.Deadline.UTC().Format(time.RFC3339Nano)
	}

	env := make([]string, 0, len(spec.Env))
	for k, v := range spec.Env {
		env = append(env, k+"="+v)
	}
	sort.Strings(env)

	res := container.Resources{NanoCPUs: spec.NanoCPUs}
	if spec.MemoryBytes > 0 {
		res.Memory = spec.MemoryBytes
		res.MemorySwap = spec.MemoryBytes // no swap beyond the limit
	}
	if spec.PidsLimit > 0 {
		res.PidsLimit = &spec.PidsLimit
	}

	opts := client.ContainerCreateOptions{
		Name: name,
		Config: &container.Config{
			Image: image,
			// The entrypoint is replaced so an image's own ENTRYPOINT cannot
			// wrap or ignore the commands; the image's USER still applies.
			Entrypoint:   []string{"/bin/sh", "-c", runScript, "flant_gitops"},
			Cmd:          spec.Commands,
			WorkingDir:   workDir,
			Env:          env,
			Labels:       labels,
			AttachStdout: true,
			AttachStderr: true,
		},
		HostConfig: &container.HostConfig{
			NetworkMode: container.NetworkMode(spec.NetworkMode),
			Resources:   res,
			CapDrop:     []string{"ALL"},
			SecurityOpt: []string{"no-new-privileges"},
			// We remove the container ourselves, after reading its exit code.
			AutoRemove: false,
		},
	}
	setup.apply(opts.Config, opts.HostConfig, spec.Deadline, spec.Timeout)
	return opts
}

// copyFiles puts the commit under /git and the extra files at their paths.
func (d *Docker) copyFiles(ctx context.Context, id string, spec *Spec) error {
	// /git belongs to the image's user, so commands of a non-root image can
	// write their build output next to the commit's files.
	if err := d.copyTar(ctx, id, true, func(w io.Writer) error {
		if spec.Files == nil {
			return rebaseTar(w, emptyTar{}, workDir[1:])
		}
		return pipeThrough(spec.Files, func(r io.Reader) error { return rebaseTar(w, r, workDir[1:]) })
	}); err != nil {
		return fmt.Errorf("copying the commit's files to %s in container %s: %w", workDir, id, err)
	}
	if len(spec.ExtraFiles) == 0 {
		return nil
	}
	// /git belongs to the image's user, so commands of a non-root image can
	// write their build output next to the commit's files.
	if err := d.copyTar(ctx, id, true, func(w io.Writer) error { return extraFilesTar(w, spec.ExtraFiles) }); err != nil {
		return fmt.Errorf("copying extra files into container %s: %w", id, err)
	}
	return nil
}

// copyTar streams the archive produced by write into the container at "/",
// owned by root or, with toUser, by the image's user.
func (d *Docker) copyTar(ctx context.Context, id string, toUser bool, write func(io.Writer) error) error {
	pr, pw := io.Pipe()
	writeErr := make(chan error, 1)
	go func() {
		err := write(pw)
		pw.CloseWithError(err)
		writeErr <- err
	}()
	_, copyErr := d.cli.CopyToContainer(ctx, id, client.CopyToContainerOptions{DestinationPath: "/", Content: pr, CopyUIDGID: toUser})
	// Unblock the writer if the engine stopped reading early.
	pr.CloseWithError(errCopyEnded)
	werr := <-writeErr
	switch {
	case werr == nil || errors.Is(werr, errCopyEnded):
		return copyErr
	case copyErr == nil:
		return werr
	default:
		// The archive's own failure is the root cause; the engine then saw a
		// truncated stream.
		return errors.Join(werr, copyErr)
	}
}

var errCopyEnded = errors.New("the engine stopped reading the archive")

// pipeThrough runs produce into a pipe whose reading end is given to consume.
// The consumer's error wins: a producer failure reaches it as a read error.
func pipeThrough(produce func(io.Writer) error, consume func(io.Reader) error) error {
	pr, pw := io.Pipe()
	prodErr := make(chan error, 1)
	go func() {
		err := produce(pw)
		pw.CloseWithError(err)
		prodErr <- err
	}()
	consErr := consume(pr)
	pr.CloseWithError(errCopyEnded)
	perr := <-prodErr
	if consErr != nil {
		return consErr
	}
	if perr != nil {
		return fmt.Errorf("writing the commit's file archive: %w", perr)
	}
	return nil
}

type emptyTar struct{}

func (emptyTar) Read([]byte) (int, error) { return 0, io.EOF }

// logStream copies a container's multiplexed output to a writer.
type logStream struct {
	conn  io.Closer // nil when there is no stream
	done  chan struct{}
	drain time.Duration
	once  sync.Once
}

// openLogs streams the engine's log of container id from the first line
// stamped after since to w; with follow it ends when the container stops.
func (d *Docker) openLogs(ctx context.Context, id string, since time.Time, follow bool, w io.Writer) (*logStream, error) {
	opts := client.ContainerLogsOptions{ShowStdout: true, ShowStderr: true, Timestamps: true, Follow: follow}
	if !since.IsZero() {
		// The engine includes a line stamped exactly at since; forwardWriter
		// drops it.
		opts.Since = fmt.Sprintf("%d.%09d", since.Unix(), since.Nanosecond())
	}
	// The stream outlives ctx so the output of a killed container is still
	// read to its end; stop closes it.
	rc, err := d.cli.ContainerLogs(context.WithoutCancel(ctx), id, opts)
	if err != nil {
		return nil, fmt.Errorf("reading the log of container %s: %w", id, err)
	}
	if w == nil {
		w = io.Discard
	}
	ls := &logStream{conn: rc, done: make(chan struct{}), drain: d.logDrain}
	go func() {
		defer close(ls.done)
		// The stream ends with the container, or with an error when stop
		// closes it: either way there is nothing more to forward.
		fw := &forwardWriter{w: w, since: since}
		fw.lw, _ = w.(LineWriter)
		_, _ = stdcopy.StdCopy(fw, fw, rc)
	}()
	return ls, nil
}

// writeNote puts a line of the plugin's own into a run's log.
func writeNote(w io.Writer, note string) {
	if w != nil {
		_, _ = fmt.Fprintf(w, "[flant_gitops: %s]\n", note)
	}
}

func noLogs() *logStream {
	ls := &logStream{done: make(chan struct{})}
	close(ls.done)
	return ls
}

// finish waits a little for the output still in flight after the exit.
func (ls *logStream) finish() {
	select {
	case <-ls.done:
	case <-time.After(ls.drain):
	}
	ls.stop()
}

// stop closes the stream and waits for the copier, so nothing is written to
// the caller's writer after Run returns.
func (ls *logStream) stop() {
	ls.once.Do(func() {
		if ls.conn != nil {
			ls.conn.Close()
		}
		<-ls.done
	})
}

// forwardWriter never fails, so the stream keeps draining after the caller's
// writer gave up (a stalled reader would eventually block the container).
// Each write is one log message of the engine, prefixed with its timestamp;
// messages stamped at or before since were kept by an earlier reader.
type forwardWriter struct {
	w      io.Writer
	lw     LineWriter // w, when it keeps timestamps
	since  time.Time
	failed bool
}

func (f *forwardWriter) Write(p []byte) (int, error) {
	n := len(p)
	at, msg := splitTimestamp(p)
	if !at.IsZero() && !at.After(f.since) {
		return n, nil
	}
	switch {
	case f.failed:
	case f.lw != nil && !at.IsZero():
		f.lw.WriteLine(msg, at)
	default:
		if _, err := f.w.Write(msg); err != nil {
			f.failed = true
		}
	}
	return n, nil
}

// splitTimestamp splits the engine's "RFC3339Nano " prefix off a message; a
// message without one is passed on whole.
func splitTimestamp(p []byte) (time.Time, []byte) {
	i := bytes.IndexByte(p, ' ')
	if i <= 0 {
		return time.Time{}, p
	}
	at, err := time.Parse(time.RFC3339Nano, string(p[:i]))
	if err != nil {
		return time.Time{}, p
	}
	return at, p[i+1:]
}

// follow waits for the container to exit, the timeout or ctx; it kills the
// container in the latter two cases, unless ctx was canceled to hand the
// container over (ErrLeftRunning): then it only stops reading its output.
// A container with our init (initDue set, when the init ends it) is left
// to the init at the timeout, and killed only if still there after its kill
// grace; its exit code says whether the init ended it.
func (d *Docker) follow(ctx context.Context, res Result, wait client.ContainerWaitResult, logs *logStream, timeout time.Duration, initDue time.Time) (Result, error) {
	if !initDue.IsZero() {
		timeout = max(min(timeout, time.Until(initDue)), 0) + KillGrace + followerSlack
	}
	timer := time.NewTimer(timeout)
	defer timer.Stop()
	var exit container.WaitResponse
	select {
	case exit = <-wait.Result:
		res.Reason = ReasonExit
	case err := <-wait.Error:
		if left := leaving(ctx, res.ContainerID); left != nil {
			logs.stop()
			return res, left
		}
		return canceledOr(ctx, res, fmt.Errorf("waiting for container %s: %w", res.ContainerID, err))
	case <-timer.C:
		res.Reason = ReasonTimeout
	case <-ctx.Done():
		if left := leaving(ctx, res.ContainerID); left != nil {
			// Every line read so far reaches the caller's writer before
			// the return; the next follower continues after the last one.
			logs.stop()
			return res, left
		}
		res.Reason = ReasonCanceled
	}
	cctx, cancel := d.cleanupContext(ctx)
	defer cancel()
	if res.Reason != ReasonExit {
		_, err := d.cli.ContainerKill(cctx, res.ContainerID, client.ContainerKillOptions{Signal: "KILL"})
		if err != nil && !cerrdefs.IsConflict(err) {
			return res, fmt.Errorf("killing container %s after %s: %w", res.ContainerID, res.Reason, err)
		}
		select {
		case exit = <-wait.Result:
		case err := <-wait.Error:
			return res, fmt.Errorf("waiting for container %s to die after %s: %w", res.ContainerID, res.Reason, err)
		case <-cctx.Done():
			return res, fmt.Errorf("container %s did not die after %s: %w", res.ContainerID, res.Reason, cctx.Err())
		}
		if err != nil {
			// Not running when the kill arrived: it had exited by itself.
			res.Reason = ReasonExit
		}
	}
	res.Finished = time.Now()
	res.ExitCode = int(exit.StatusCode)
	if exit.Error != nil && exit.Error.Message != "" {
		return res, fmt.Errorf("container %s: engine reported: %s", res.ContainerID, exit.Error.Message)
	}
	if res.Reason == ReasonExit && initTimedOut(res.ExitCode, initDue, res.Finished) {
		res.Reason = ReasonTimeout
	}
	if res.Reason == ReasonExit && res.ExitCode != 0 {
		if insp, err := d.cli.ContainerInspect(cctx, res.ContainerID, client.ContainerInspectOptions{}); err == nil && insp.Container.State != nil && insp.Container.State.OOMKilled {
			res.Reason = ReasonOOMKilled
		}
	}
	logs.finish()
	return res, nil
}

// Find implements Runner.
func (d *Docker) Find(ctx context.Context, labels map[string]string) ([]Found, error) {
	f := make(client.Filters).Add("label", labelManaged+"=true")
	for k, v := range labels {
		f.Add("label", k+"="+v)
	}
	list, err := d.cli.ContainerList(ctx, client.ContainerListOptions{All: true, Filters: f})
	if err != nil {
		return nil, fmt.Errorf("listing managed containers: %w", err)
	}
	found := make([]Found, 0, len(list.Items))
	for _, c := range list.Items {
		fc := Found{ID: c.ID, Labels: c.Labels, State: string(c.State), Created: time.Unix(c.Created, 0), Deadline: parseTime(c.Labels[labelDeadline])}
		if len(c.Names) > 0 {
			fc.Name = trimSlash(c.Names[0])
		}
		found = append(found, fc)
	}
	sort.Slice(found, func(i, j int) bool { return found[i].Created.Before(found[j].Created) })
	return found, nil
}

// Attach implements Runner. A timeout <= 0 means the run's time is already
// up: a running container is killed at once with ReasonTimeout.
func (d *Docker) Attach(ctx context.Context, id string, log io.Writer, since time.Time, timeout time.Duration) (res Result, err error) {
	if left := leaving(ctx, id); left != nil {
		return Result{ContainerID: id}, left
	}
	insp, err := d.inspectManaged(ctx, id)
	if err != nil {
		if left := leaving(ctx, id); left != nil {
			return Result{ContainerID: id}, left
		}
		return Result{}, err
	}
	res.ContainerID = insp.ID
	defer func() {
		if errors.Is(err, ErrLeftRunning) {
			return // handed over: the next follower removes it
		}
		if rmErr := d.remove(ctx, insp.ID); rmErr != nil && !cerrdefs.IsNotFound(rmErr) {
			err = errors.Join(err, fmt.Errorf("removing container %s: %w", insp.ID, rmErr))
		}
	}()
	st := insp.State
	res.Started = parseTime(st.StartedAt)
	var initDue time.Time
	if insp.Config.Labels[labelInit] == "true" {
		// The init's own deadline, not the caller's: a re-attach never
		// extends it.
		initDue = parseTime(insp.Config.Labels[labelDeadline])
	}
	switch st.Status {
	case container.StateCreated:
		return res, fmt.Errorf("container %s: %w; it has been removed", insp.ID, ErrNeverStarted)
	case container.StateRunning, container.StatePaused, container.StateRestarting:
	default:
		res.Reason, res.ExitCode, res.Finished = ReasonExit, st.ExitCode, parseTime(st.FinishedAt)
		switch {
		case st.OOMKilled:
			res.Reason = ReasonOOMKilled
		case initTimedOut(st.ExitCode, initDue, res.Finished):
			res.Reason = ReasonTimeout
		}
		// What it printed after the caller's last line is still in the
		// engine's log.
		logs, err := d.openLogs(ctx, insp.ID, since, false, log)
		if err != nil {
			if left := leaving(ctx, insp.ID); left != nil {
				return res, left
			}
			return canceledOr(ctx, res, err)
		}
		select {
		case <-logs.done:
		case <-ctx.Done():
			logs.stop()
			if left := leaving(ctx, insp.ID); left != nil {
				// Its log was not read to the end: the next follower
				// reads the rest and removes it.
				return res, left
			}
		}
		logs.stop()
		return res, nil
	}

	waitCtx, stopWait := context.WithCancel(context.WithoutCancel(ctx))
	defer stopWait()
	wait := d.cli.ContainerWait(waitCtx, insp.ID, client.ContainerWaitOptions{Condition: container.WaitConditionNotRunning})
	logs, err := d.openLogs(ctx, insp.ID, since, true, log)
	if err != nil {
		if left := leaving(ctx, insp.ID); left != nil {
			return res, left
		}
		if ctx.Err() != nil {
			return canceledOr(ctx, res, err)
		}
		// The container is followed to its end even without its output.
		logs = noLogs()
		writeNote(log, fmt.Sprintf("the container's output cannot be read: %v", err))
	}
	defer logs.stop()
	return d.follow(ctx, res, wait, logs, max(timeout, time.Nanosecond), initDue)
}

// Remove implements Runner.
func (d *Docker) Remove(ctx context.Context, id string) error {
	insp, err := d.inspectManaged(ctx, id)
	if cerrdefs.IsNotFound(err) {
		return nil
	}
	if err != nil {
		return err
	}
	if err := d.remove(ctx, insp.ID); err != nil && !cerrdefs.IsNotFound(err) {
		return fmt.Errorf("removing container %s: %w", insp.ID, err)
	}
	return nil
}

func (d *Docker) inspectManaged(ctx context.Context, id string) (container.InspectResponse, error) {
	insp, err := d.cli.ContainerInspect(ctx, id, client.ContainerInspectOptions{})
	if err != nil {
		return container.InspectResponse{}, fmt.Errorf("inspecting container %s: %w", id, err)
	}
	c := insp.Container
	if c.Config == nil || c.Config.Labels[labelManaged] != "true" || c.State == nil {
		return container.InspectResponse{}, fmt.Errorf("container %s: %w", id, ErrNotManaged)
	}
	return c, nil
}

// remove force-removes a container and its anonymous volumes on a fresh
// context, so cleanup happens even when ctx is already done.
func (d *Docker) remove(ctx context.Context, id string) error {
	cctx, cancel := d.cleanupContext(ctx)
	defer cancel()
	_, err := d.cli.ContainerRemove(cctx, id, client.ContainerRemoveOptions{Force: true, RemoveVolumes: true})
	return err
}

// leaving is the error Run and Attach return when ctx was canceled to hand
// container id over (a cause wrapping ErrLeftRunning), else nil.
func leaving(ctx context.Context, id string) error {
	if ctx.Err() == nil {
		return nil
	}
	cause := context.Cause(ctx)
	if !errors.Is(cause, ErrLeftRunning) {
		return nil
	}
	return fmt.Errorf("stopped following container %s: %w", id, cause)
}

// canceledOr turns a failure caused by the caller's cancellation into the
// canceled outcome, and passes any other failure through.
func canceledOr(ctx context.Context, res Result, err error) (Result, error) {
	if ctx.Err() != nil {
		res.Reason = ReasonCanceled
		return res, nil
	}
	return res, err
}

func containerName() (string, error) {
	b := make([]byte, 8)
	if _, err := rand.Read(b); err != nil {
		return "", fmt.Errorf("generating a container name: %w", err)
	}
	return "flant_gitops-" + hex.EncodeToString(b), nil
}

func trimSlash(s string) string {
	if len(s) > 0 && s[0] == '/' {
		return s[1:]
	}
	return s
}

func minTime(a, b time.Time) time.Time {
	if a.Before(b) {
		return a
	}
	return b
}

func parseTime(s string) time.Time {
	t, err := time.Parse(time.RFC3339Nano, s)
	if err != nil || t.Year() <= 1 {
		return time.Time{}
	}
	return t
}
