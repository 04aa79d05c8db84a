package container_test

import (
	"context"
	"crypto/x509"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/flant/flant_gitops/container"
	"github.com/flant/flant_gitops/container/dockertest"
)

func TestHostScheme(t *testing.T) {
	for _, tc := range []struct{ host, want string }{
		{"tcp://docker.example.com:2376", "tcp"},
		{"TCP://docker.example.com:2376", "tcp"},
		{"Tcp://docker.example.com:2376", "tcp"},
		{"tCP://docker.example.com:2376", "tcp"},
		{"unix:///var/run/docker.sock", "unix"},
		{"UNIX:///var/run/docker.sock", "unix"},
		{"Unix:///var/run/docker.sock", "unix"},
		{"HTTPS://docker.example.com:2376", "https"},
		{"docker.example.com:2376", ""},
		{"", ""},
	} {
		if got := container.HostScheme(tc.host); got != tc.want {
			t.Errorf("HostScheme(%q) = %q, want %q", tc.host, got, tc.want)
		}
	}
}

// The mutual-TLS rule reads the scheme as the transport does: TCP:// is
// tcp:// for both, so it cannot pass the rule and then talk plain HTTP.
func TestEngineValidateSchemeCase(t *testing.T) {
	now := time.Now()
	ca := makeCert(t, nil, "engine CA", now.Add(time.Hour))
	client := makeCert(t, ca, "client", now.Add(time.Hour), x509.ExtKeyUsageClientAuth)
	for _, tc := range []struct {
		name string
		e    container.Engine
		want string // "" when valid
	}{
		{"TCP without TLS", container.Engine{Host: "TCP://docker.example.com:2375"}, "needs mutual TLS"},
		{"Tcp without TLS", container.Engine{Host: "Tcp://docker.example.com:2375"}, "needs mutual TLS"},
		{"TCP with TLS", container.Engine{Host: "TCP://docker.example.com:2376", CACert: ca.certPEM, ClientCert: client.certPEM, ClientKey: client.keyPEM}, ""},
		{"UNIX socket", container.Engine{Host: "UNIX:///var/run/docker.sock"}, ""},
		{"UNIX with TLS", container.Engine{Host: "UNIX:///var/run/docker.sock", CACert: ca.certPEM}, "unix socket"},
		{"HTTP scheme", container.Engine{Host: "HTTP://docker.example.com:2375"}, "not supported"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.e.Validate(now)
			if tc.want == "" && err != nil {
				t.Fatalf("refused: %v", err)
			}
			if tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)) {
				t.Fatalf("got %v, want an error saying %q", err, tc.want)
			}
		})
	}
}

// Through a real engine: an upper-case tcp scheme is reached with mutual
// TLS (a TLS-only proxy in front of the local engine answers nothing else),
// and an upper-case unix scheme reaches the socket.
func TestEngineSchemeCaseReachesTheEngine(t *testing.T) {
	proxy := dockertest.NewTLSProxy(t)
	rest := strings.TrimPrefix(proxy.URL, "tcp://")
	socket := "/var/run/docker.sock"
	if h := os.Getenv("DOCKER_HOST"); strings.HasPrefix(h, "unix://") {
		socket = strings.TrimPrefix(h, "unix://")
	}
	cases := []struct {
		name string
		e    container.Engine
	}{
		{"TCP", container.Engine{Host: "TCP://" + rest, CACert: proxy.CAPEM, ClientCert: proxy.ClientCertPEM, ClientKey: proxy.ClientKeyPEM}},
		{"Tcp", container.Engine{Host: "Tcp://" + rest, CACert: proxy.CAPEM, ClientCert: proxy.ClientCertPEM, ClientKey: proxy.ClientKeyPEM}},
	}
	if os.Getenv("DOCKER_HOST") == "" || strings.HasPrefix(os.Getenv("DOCKER_HOST"), "unix://") {
		cases = append(cases,
			struct {
				name string
				e    container.Engine
			}{"UNIX", container.Engine{Host: "UNIX://" + socket}},
			struct {
				name string
				e    container.Engine
			}{"Unix", container.Engine{Host: "Unix://" + socket}},
		)
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			d, err := container.NewDocker(ctx, container.WithEngine(tc.e))
			if err != nil {
				t.Fatalf("connecting to %s: %v", tc.e.Host, err)
			}
			defer d.Close()
			if err := d.Ping(ctx); err != nil {
				t.Fatalf("ping %s: %v", tc.e.Host, err)
			}
		})
	}
}
