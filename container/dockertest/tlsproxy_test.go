package dockertest

import (
	"context"
	"errors"
	"io"
	"strings"
	"testing"
	"time"

	cerrdefs "github.com/containerd/errdefs"
	"github.com/moby/moby/api/pkg/stdcopy"
	mcontainer "github.com/moby/moby/api/types/container"
	"github.com/moby/moby/client"

	"github.com/flant/flant_gitops/container"
)

func proxyRunner(t *testing.T, e container.Engine) *container.Docker {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	d, err := container.NewDocker(ctx, container.WithEngine(e))
	if err != nil {
		t.Fatalf("connecting through the proxy: %v", err)
	}
	t.Cleanup(func() { _ = d.Close() })
	return d
}

// A run through the proxy works as on the local socket: create, copy,
// start, streamed logs, wait, remove.
func TestTLSProxyRunsAContainer(t *testing.T) {
	p := NewTLSProxy(t)
	if !strings.HasPrefix(p.URL, "tcp://127.0.0.1:") {
		t.Fatalf("URL %q, want tcp://127.0.0.1:PORT", p.URL)
	}
	d := proxyRunner(t, p.Engine())
	img := Image(t, d)
	var log strings.Builder
	res, err := d.Run(context.Background(), container.Spec{
		Image:    img,
		Commands: []string{"echo first", "sleep 1", "echo second >&2"},
		Timeout:  time.Minute,
		Log:      &log,
		Labels:   map[string]string{"flant_gitops.test": t.Name()},
	})
	if err != nil || res.Reason != container.ReasonExit || res.ExitCode != 0 {
		t.Fatalf("run through the proxy: %+v, %v; log %q", res, err, log.String())
	}
	if log.String() != "first\nsecond\n" {
		t.Errorf("log %q, want both lines streamed through the proxy", log.String())
	}
	if created := p.Created(); len(created) != 1 || created[0] != res.ContainerID {
		t.Errorf("the proxy saw creates %v, want the run's container %s", created, res.ContainerID)
	}
	NoLeftovers(t, d, map[string]string{"flant_gitops.test": t.Name()})
}

// Attach is an HTTP 101 upgrade to a raw stream: it must pass the proxy.
func TestTLSProxyAttachStreams(t *testing.T) {
	p := NewTLSProxy(t)
	d := proxyRunner(t, p.Engine())
	img := Image(t, d)
	cli := d.Client()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	created, err := cli.ContainerCreate(ctx, client.ContainerCreateOptions{
		Config: &mcontainer.Config{Image: img, Cmd: []string{"/bin/sh", "-c", "echo attached; sleep 1; echo done"}, AttachStdout: true, AttachStderr: true},
	})
	if err != nil {
		t.Fatalf("create: %v", err)
	}
	defer func() {
		_, _ = cli.ContainerRemove(context.Background(), created.ID, client.ContainerRemoveOptions{Force: true})
	}()
	att, err := cli.ContainerAttach(ctx, created.ID, client.ContainerAttachOptions{Stream: true, Stdout: true, Stderr: true})
	if err != nil {
		t.Fatalf("attach through the proxy: %v", err)
	}
	defer att.Close()
	if _, err := cli.ContainerStart(ctx, created.ID, client.ContainerStartOptions{}); err != nil {
		t.Fatalf("start: %v", err)
	}
	var out strings.Builder
	if _, err := stdcopy.StdCopy(&out, &out, att.Reader); err != nil && !errors.Is(err, io.EOF) {
		t.Fatalf("reading the attached stream: %v", err)
	}
	if out.String() != "attached\ndone\n" {
		t.Errorf("attached output %q, want both lines", out.String())
	}
}

// The proxy refuses what a --tlsverify engine refuses, and the errors say
// which side's certificate is wrong.
func TestTLSProxyRefusesWrongCertificates(t *testing.T) {
	p := NewTLSProxy(t)
	cases := []struct {
		name string
		e    container.Engine
		want string
	}{
		{"client certificate of another CA", container.Engine{Host: p.URL, CACert: p.CAPEM, ClientCert: p.WrongClientCertPEM, ClientKey: p.WrongClientKeyPEM},
			"refused our client certificate"},
		{"ca_cert that does not sign the engine's certificate", container.Engine{Host: p.URL, CACert: p.WrongCAPEM, ClientCert: p.ClientCertPEM, ClientKey: p.ClientKeyPEM},
			"ca_cert does not verify the engine's certificate"},
		{"server name not in the certificate", container.Engine{Host: p.URL, CACert: p.CAPEM, ClientCert: p.ClientCertPEM, ClientKey: p.ClientKeyPEM, ServerName: "docker.example.com"},
			"set tls_server_name"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			d, err := container.NewDocker(ctx, container.WithEngine(tc.e))
			if err == nil {
				_ = d.Close()
				t.Fatal("connected; want a refusal")
			}
			t.Logf("%v", err)
			if !errors.Is(err, container.ErrDaemonUnreachable) || !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), p.URL[len("tcp://"):]) {
				t.Errorf("error %q, want ErrDaemonUnreachable naming the engine and saying %q", err, tc.want)
			}
		})
	}
	t.Run("localhost is in the certificate", func(t *testing.T) {
		e := p.Engine()
		e.ServerName = "localhost"
		proxyRunner(t, e)
	})
}

// SimulateOtherEngine: another id, and neither engine sees the other's
// containers.
func TestTLSProxySimulatesAnotherEngine(t *testing.T) {
	p := NewTLSProxy(t)
	d := proxyRunner(t, p.Engine())
	local := Runner(t)
	img := Image(t, d)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	realID, err := d.EngineID(ctx)
	if err != nil || realID == "" {
		t.Fatalf("engine id: %q, %v", realID, err)
	}
	label := map[string]string{"flant_gitops.test": t.Name()}
	onReal, err := StartManaged(ctx, d, img, label)
	if err != nil {
		t.Fatalf("start on the real engine: %v", err)
	}
	t.Cleanup(func() { NoLeftovers(t, local, label) })
	defer func() { _ = local.Remove(context.Background(), onReal) }()

	p.SimulateOtherEngine("other-engine-id")
	if id, err := d.EngineID(ctx); err != nil || id != "other-engine-id" {
		t.Fatalf("engine id while simulating: %q, %v", id, err)
	}
	if found, err := d.Find(ctx, label); err != nil || len(found) != 0 {
		t.Fatalf("the other engine lists %v (%v), want none of the real engine's", found, err)
	}
	if err := d.Remove(ctx, onReal); err != nil {
		t.Fatalf("remove of a container the other engine does not have: %v, want nothing done", err)
	}
	_, err = d.Client().ContainerInspect(ctx, onReal, client.ContainerInspectOptions{})
	if !cerrdefs.IsNotFound(err) {
		t.Fatalf("inspect of the real engine's container from the other: %v, want not found", err)
	}
	if _, err := d.Client().ContainerInspect(ctx, onReal[:12], client.ContainerInspectOptions{}); !cerrdefs.IsNotFound(err) {
		t.Fatalf("inspect by short id: %v, want not found", err)
	}
	var log strings.Builder
	res, err := d.Run(ctx, container.Spec{Image: img, Commands: []string{"echo on the other engine"}, Timeout: time.Minute, Labels: label, Log: &log})
	if err != nil || res.ExitCode != 0 || log.String() != "on the other engine\n" {
		t.Fatalf("run on the other engine: %+v, %v, log %q", res, err, log.String())
	}
	onOther, err := StartManaged(ctx, d, img, label)
	if err != nil {
		t.Fatalf("start on the other engine: %v", err)
	}
	defer func() { _ = local.Remove(context.Background(), onOther) }()
	if found, err := d.Find(ctx, label); err != nil || len(found) != 1 || found[0].ID != onOther {
		t.Fatalf("the other engine lists %v (%v), want only %s", found, err, onOther)
	}

	p.SimulateOtherEngine("")
	if id, err := d.EngineID(ctx); err != nil || id != realID {
		t.Fatalf("engine id back on the real engine: %q, %v; want %s", id, err, realID)
	}
	if found, err := d.Find(ctx, label); err != nil || len(found) != 1 || found[0].ID != onReal {
		t.Fatalf("the real engine lists %v (%v), want only %s", found, err, onReal)
	}
	if _, err := d.Client().ContainerInspect(ctx, onOther, client.ContainerInspectOptions{}); !cerrdefs.IsNotFound(err) {
		t.Fatalf("inspect of the other engine's container from the real one: %v, want not found", err)
	}
	for _, id := range []string{onReal, onOther} {
		if err := local.Remove(ctx, id); err != nil {
			t.Fatalf("removing %s on the local socket: %v", id, err)
		}
	}
}
