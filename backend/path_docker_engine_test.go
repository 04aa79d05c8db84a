package backend

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/hashicorp/vault/sdk/logical"

	"github.com/flant/flant_gitops/backend/watch"
	"github.com/flant/flant_gitops/container/dockertest"
)

// engineFields are the write fields reaching proxy p with its good client
// certificate.
func engineFields(p *dockertest.TLSProxy) map[string]any {
	return map[string]any{"host": p.URL, "ca_cert": string(p.CAPEM), "client_cert": string(p.ClientCertPEM), "client_key": string(p.ClientKeyPEM)}
}

func engineRequest(p *testPlugin, op logical.Operation, data map[string]any) (*logical.Response, error) {
	return p.b.HandleRequest(context.Background(), &logical.Request{Operation: op, Path: "configure/docker_engine", Storage: p.s, Data: data, MountPoint: "flant_gitops/"})
}

func TestDockerEngineWriteReadDelete(t *testing.T) {
	proxy := dockertest.NewTLSProxy(t)
	p := newTestPlugin(t, nil)
	ctx := context.Background()

	if resp, err := engineRequest(p, logical.ReadOperation, nil); err != nil || resp != nil {
		t.Fatalf("read before any write: %v, %v; want nothing (the local default)", resp, err)
	}
	resp := p.request(t, logical.CreateOperation, "configure/docker_engine", engineFields(proxy))
	if resp != nil && len(resp.Warnings) > 0 {
		t.Fatalf("write of a reachable engine warned: %v", resp.Warnings)
	}
	read := p.request(t, logical.ReadOperation, "configure/docker_engine", nil)
	if _, ok := read.Data["client_key"]; ok {
		t.Fatalf("a read returned client_key: %v", read.Data)
	}
	for k, v := range read.Data {
		if s, _ := v.(string); strings.Contains(s, "PRIVATE KEY") {
			t.Fatalf("read field %s holds a private key", k)
		}
	}
	if read.Data["host"] != proxy.URL || read.Data["client_key_set"] != true || read.Data["ca_cert"] != string(proxy.CAPEM) || read.Data["client_cert"] != string(proxy.ClientCertPEM) {
		t.Errorf("read = %v", read.Data)
	}
	stored, err := getDockerEngine(ctx, p.s)
	if err != nil || stored.ClientKey != string(proxy.ClientKeyPEM) {
		t.Fatalf("stored entry %v, %v: the client key is not kept as written", stored != nil, err)
	}

	// A stored key never follows a changed address.
	for _, tc := range []struct {
		name string
		data map[string]any
		want []string
	}{
		{"host", map[string]any{"host": "tcp://127.0.0.1:1"}, []string{"changing host would send the stored client_key"}},
		{"tls_server_name", map[string]any{"tls_server_name": "localhost"}, []string{"changing tls_server_name"}},
		{"ca_cert", map[string]any{"ca_cert": string(proxy.WrongCAPEM)}, []string{"changing ca_cert"}},
		{"host and server name", map[string]any{"host": "tcp://localhost:2376", "tls_server_name": "localhost"}, []string{"changing host, tls_server_name"}},
	} {
		t.Run("changing "+tc.name+" without client_key", func(t *testing.T) {
			resp, err := engineRequest(p, logical.UpdateOperation, tc.data)
			if err != nil || !resp.IsError() {
				t.Fatalf("got %v, %v; want a 400", resp, err)
			}
			for _, w := range append(tc.want, "give client_key", "nothing was changed") {
				if !strings.Contains(resp.Error().Error(), w) {
					t.Errorf("error %q does not say %q", resp.Error(), w)
				}
			}
			if after := p.request(t, logical.ReadOperation, "configure/docker_engine", nil); after.Data["host"] != proxy.URL || after.Data["tls_server_name"] != "" {
				t.Errorf("the refused write changed the entry: %v", after.Data)
			}
		})
	}

	t.Run("a new host with the key is stored, with a warning when unreachable", func(t *testing.T) {
		resp, err := engineRequest(p, logical.UpdateOperation, map[string]any{"host": "tcp://127.0.0.1:1", "client_key": string(proxy.ClientKeyPEM)})
		if err != nil || resp.IsError() {
			t.Fatalf("write: %v, %v", resp, err)
		}
		if resp == nil || len(resp.Warnings) != 1 || !strings.Contains(resp.Warnings[0], "cannot be reached now") || !strings.Contains(resp.Warnings[0], "nothing answers") {
			t.Fatalf("warnings %v, want one saying the engine cannot be reached", resp)
		}
		if read := p.request(t, logical.ReadOperation, "configure/docker_engine", nil); read.Data["host"] != "tcp://127.0.0.1:1" {
			t.Errorf("not stored: %v", read.Data)
		}
	})

	t.Run("a unix socket drops the TLS fields", func(t *testing.T) {
		p.request(t, logical.UpdateOperation, "configure/docker_engine", map[string]any{"host": "unix:///var/run/docker.sock"})
		read := p.request(t, logical.ReadOperation, "configure/docker_engine", nil)
		if read.Data["client_key_set"] != false || read.Data["ca_cert"] != "" || read.Data["client_cert"] != "" {
			t.Errorf("read after moving to a socket: %v", read.Data)
		}
	})

	p.request(t, logical.DeleteOperation, "configure/docker_engine", nil)
	if resp, err := engineRequest(p, logical.ReadOperation, nil); err != nil || resp != nil {
		t.Fatalf("read after delete: %v, %v", resp, err)
	}
}

func TestDockerEngineWriteRefusesWhatCannotWork(t *testing.T) {
	proxy := dockertest.NewTLSProxy(t)
	good := engineFields(proxy)
	with := func(k string, v any) map[string]any {
		m := map[string]any{}
		for kk, vv := range good {
			m[kk] = vv
		}
		if v == nil {
			delete(m, k)
		} else {
			m[k] = v
		}
		return m
	}
	cases := []struct {
		name string
		data map[string]any
		want string
	}{
		{"no host", with("host", nil), "host is required"},
		{"plain tcp", map[string]any{"host": "tcp://127.0.0.1:2375"}, "needs mutual TLS, missing ca_cert, client_cert, client_key"},
		{"no client key", with("client_key", nil), "missing client_key"},
		{"unix with TLS", with("host", "unix:///var/run/docker.sock"), "unix socket"},
		{"key of another certificate", with("client_key", string(proxy.WrongClientKeyPEM)), "do not form a key pair"},
		{"ca_cert not PEM", with("ca_cert", "hello"), "ca_cert is not PEM"},
		{"http scheme", with("host", "http://127.0.0.1:2375"), "not supported"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			p := newTestPlugin(t, nil)
			resp, err := engineRequest(p, logical.CreateOperation, tc.data)
			if err != nil || !resp.IsError() || !strings.Contains(resp.Error().Error(), tc.want) {
				t.Fatalf("got %v, %v; want a 400 saying %q", resp, err, tc.want)
			}
			if strings.Contains(resp.Error().Error(), "PRIVATE KEY") {
				t.Fatalf("the error quotes a key: %v", resp.Error())
			}
			if e, _ := getDockerEngine(context.Background(), p.s); e != nil {
				t.Fatal("a refused write was stored")
			}
		})
	}
}

// status shows the engine, and why it cannot be used; a poll does not start
// a run while it cannot; the worker's runner follows a change of engine.
func TestDockerEngineStatusAndWorker(t *testing.T) {
	a := dockertest.NewTLSProxy(t)
	b := dockertest.NewTLSProxy(t)
	b.SimulateOtherEngine("engine-b")
	p := newTestPlugin(t, nil)
	ctx := context.Background()
	local := dockertest.Runner(t)

	engine := func() map[string]any {
		t.Helper()
		e, _ := p.request(t, logical.ReadOperation, "status", nil).Data["engine"].(map[string]any)
		return e
	}
	if e := engine(); e["host"] != "local" || e["reachable"] != true || e["id"] == "" {
		t.Fatalf("status engine without configuration: %v", e)
	}
	realID := engine()["id"]

	p.request(t, logical.CreateOperation, "configure/docker_engine", engineFields(a))
	if e := engine(); e["host"] != a.URL || e["reachable"] != true || e["id"] != realID || e["version"] == "" || e["error"] != nil {
		t.Fatalf("status engine through the proxy: %v", e)
	}

	// The worker's runner is made once; it must follow the setting.
	runner, err := p.b.watchDeps().NewRunner(ctx)
	if err != nil {
		t.Fatal(err)
	}
	label := map[string]string{watch.LabelMount: "engine-test-" + randomHex(t)}
	img := dockertest.Image(t, local)
	id, err := dockertest.StartManaged(ctx, local, img, label)
	if err != nil {
		t.Fatalf("starting a container on the local engine: %v", err)
	}
	defer func() { _ = local.Remove(context.Background(), id) }()
	if found, err := runner.Find(ctx, label); err != nil || len(found) != 1 {
		t.Fatalf("the runner on engine A finds %v, %v; want the container", found, err)
	}
	bFields := engineFields(b)
	p.request(t, logical.UpdateOperation, "configure/docker_engine", bFields)
	if e := engine(); e["id"] != "engine-b" {
		t.Fatalf("status after switching to engine B: %v", e)
	}
	if found, err := runner.Find(ctx, label); err != nil || len(found) != 0 {
		t.Fatalf("the runner after switching to engine B finds %v, %v; want nothing (B does not see A's containers)", found, err)
	}

	// A wrong client certificate: a clear error, and the poll stops
	// before any run.
	wrong := engineFields(a)
	wrong["client_cert"], wrong["client_key"] = string(a.WrongClientCertPEM), string(a.WrongClientKeyPEM)
	resp := p.request(t, logical.UpdateOperation, "configure/docker_engine", wrong)
	if resp == nil || len(resp.Warnings) != 1 || !strings.Contains(resp.Warnings[0], "refused our client certificate") {
		t.Fatalf("write of a refused certificate: %v, want a warning saying so", resp)
	}
	e := engine()
	if e["reachable"] != false || !strings.Contains(e["error"].(string), "refused our client certificate") || e["id"] != nil {
		t.Fatalf("status engine with a refused certificate: %v", e)
	}
	p.request(t, logical.UpdateOperation, "configure", map[string]any{"git_repo_url": "https://git.example.com/r.git", "docker_image": testImage, "commands": "true"})
	_, err = p.b.watchDeps().Settings(ctx, watchStorage{p.s})
	var ee *engineError
	if !errors.As(err, &ee) || !strings.Contains(err.Error(), "no run starts") || !strings.Contains(err.Error(), "refused our client certificate") {
		t.Fatalf("the poll's settings with a refused certificate: %v, want the engine error", err)
	}
	if _, err := runner.Find(ctx, label); err == nil {
		t.Fatal("the runner still reaches an engine that refuses the certificate")
	}

	p.request(t, logical.DeleteOperation, "configure/docker_engine", nil)
	if _, err := p.b.watchDeps().Settings(ctx, watchStorage{p.s}); err != nil {
		t.Fatalf("settings after going back to the local engine: %v", err)
	}
	if e := engine(); e["host"] != "local" || e["reachable"] != true {
		t.Fatalf("status engine after delete: %v", e)
	}
	if found, err := runner.Find(ctx, label); err != nil || len(found) != 1 {
		t.Fatalf("the runner back on the local engine finds %v, %v", found, err)
	}
}
