package backend

import (
	"strings"
	"testing"

	"github.com/hashicorp/vault/sdk/logical"

	"github.com/flant/flant_gitops/container/dockertest"
)

// configure/docker_engine decides tcp:// in any case of the scheme the way
// the transport does: TCP:// needs mutual TLS and is reached with it, and a
// stored client key never follows a move to TCP://other.
func TestDockerEngineSchemeCase(t *testing.T) {
	proxy := dockertest.NewTLSProxy(t)
	rest := strings.TrimPrefix(proxy.URL, "tcp://")
	for _, scheme := range []string{"TCP", "Tcp", "tCp"} {
		t.Run(scheme, func(t *testing.T) {
			p := newTestPlugin(t, nil)
			if resp, err := engineRequest(p, logical.CreateOperation, map[string]any{"host": scheme + "://" + rest}); err != nil || !resp.IsError() || !strings.Contains(resp.Error().Error(), "needs mutual TLS") {
				t.Fatalf("plain %s:// got %v, %v; want a 400 asking for mutual TLS", scheme, resp, err)
			}
			fields := engineFields(proxy)
			fields["host"] = scheme + "://" + rest
			resp := p.request(t, logical.CreateOperation, "configure/docker_engine", fields)
			if resp != nil && len(resp.Warnings) > 0 {
				t.Fatalf("write of %s:// warned: %v (the engine is reached with TLS only)", scheme, resp.Warnings)
			}
			e, _ := p.request(t, logical.ReadOperation, "status", nil).Data["engine"].(map[string]any)
			if e["reachable"] != true || e["error"] != nil {
				t.Fatalf("status engine of %s://: %v; want it reached with mutual TLS", scheme, e)
			}
			resp, err := engineRequest(p, logical.UpdateOperation, map[string]any{"host": scheme + "://127.0.0.1:1"})
			if err != nil || !resp.IsError() || !strings.Contains(resp.Error().Error(), "would send the stored client_key") {
				t.Fatalf("moving to %s://127.0.0.1:1 without client_key: %v, %v; want a 400 about the stored client_key", scheme, resp, err)
			}
		})
	}
}
