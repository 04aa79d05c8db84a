package container_test

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"math/big"
	"strings"
	"testing"
	"time"

	"github.com/flant/flant_gitops/container"
)

type testCert struct {
	cert     *x509.Certificate
	key      *ecdsa.PrivateKey
	certPEM  []byte
	keyPEM   []byte
	keyPKCS1 []byte
}

// makeCert issues a certificate signed by parent (self-signed when nil).
func makeCert(t *testing.T, parent *testCert, cn string, notAfter time.Time, usage ...x509.ExtKeyUsage) *testCert {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(time.Now().UnixNano()),
		Subject:      pkix.Name{CommonName: cn},
		NotBefore:    time.Now().Add(-48 * time.Hour),
		NotAfter:     notAfter,
		ExtKeyUsage:  usage,
		KeyUsage:     x509.KeyUsageDigitalSignature,
	}
	signer, signKey := tmpl, key
	if parent == nil {
		tmpl.IsCA, tmpl.BasicConstraintsValid, tmpl.KeyUsage = true, true, x509.KeyUsageCertSign
	} else {
		signer, signKey = parent.cert, parent.key
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, signer, &key.PublicKey, signKey)
	if err != nil {
		t.Fatal(err)
	}
	c, _ := x509.ParseCertificate(der)
	kder, _ := x509.MarshalPKCS8PrivateKey(key)
	ecder, _ := x509.MarshalECPrivateKey(key)
	return &testCert{cert: c, key: key,
		certPEM:  pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		keyPEM:   pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kder}),
		keyPKCS1: pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: ecder}),
	}
}

func TestEngineValidate(t *testing.T) {
	now := time.Now()
	later := now.Add(24 * time.Hour)
	ca := makeCert(t, nil, "engine CA", later)
	client := makeCert(t, ca, "client", later, x509.ExtKeyUsageClientAuth)
	other := makeCert(t, ca, "other client", later, x509.ExtKeyUsageClientAuth)
	serverOnly := makeCert(t, ca, "server", later, x509.ExtKeyUsageServerAuth)
	expired := makeCert(t, ca, "old client", now.Add(-time.Hour), x509.ExtKeyUsageClientAuth)
	expiredCA := makeCert(t, nil, "old CA", now.Add(-time.Hour))
	encrypted := pem.EncodeToMemory(&pem.Block{Type: "ENCRYPTED PRIVATE KEY", Bytes: []byte{1, 2, 3}})
	tcp := func(mod func(e *container.Engine)) container.Engine {
		e := container.Engine{Host: "tcp://docker.example.com:2376", CACert: ca.certPEM, ClientCert: client.certPEM, ClientKey: client.keyPEM}
		if mod != nil {
			mod(&e)
		}
		return e
	}
	cases := []struct {
		name string
		e    container.Engine
		want string // "" when valid
	}{
		{"local default", container.Engine{}, ""},
		{"unix socket", container.Engine{Host: "unix:///var/run/docker.sock"}, ""},
		{"mutual TLS", tcp(nil), ""},
		{"mutual TLS, EC key in SEC1 form", tcp(func(e *container.Engine) { e.ClientKey = client.keyPKCS1 }), ""},
		{"mutual TLS with a server name", tcp(func(e *container.Engine) { e.ServerName = "docker.internal" }), ""},
		{"TLS for the local default", container.Engine{CACert: ca.certPEM}, "are for a tcp:// host"},
		{"plain tcp", container.Engine{Host: "tcp://docker.example.com:2375"}, "needs mutual TLS, missing ca_cert, client_cert, client_key"},
		{"tcp without the key", tcp(func(e *container.Engine) { e.ClientKey = nil }), "missing client_key"},
		{"tcp without a port", tcp(func(e *container.Engine) { e.Host = "tcp://docker.example.com" }), "give tcp://host:port"},
		{"tcp with a path", tcp(func(e *container.Engine) { e.Host = "tcp://docker.example.com:2376/x" }), "nothing after the port"},
		{"unix with TLS", tcp(func(e *container.Engine) { e.Host = "unix:///run/docker.sock" }), "unix socket"},
		{"unix relative", container.Engine{Host: "unix://run/docker.sock"}, "absolute path"},
		{"https scheme", tcp(func(e *container.Engine) { e.Host = "https://docker.example.com:2376" }), "scheme https:// is not supported"},
		{"ssh scheme", container.Engine{Host: "ssh://root@docker.example.com"}, "scheme ssh:// is not supported"},
		{"no scheme", container.Engine{Host: "docker.example.com:2376"}, "not supported"},
		{"ca_cert not PEM", tcp(func(e *container.Engine) { e.CACert = []byte("not pem") }), "ca_cert is not PEM"},
		{"ca_cert is a key", tcp(func(e *container.Engine) { e.CACert = client.keyPEM }), `ca_cert holds a PEM "PRIVATE KEY" block`},
		{"ca_cert expired", tcp(func(e *container.Engine) { e.CACert = expiredCA.certPEM }), "expired"},
		{"client_cert not PEM", tcp(func(e *container.Engine) { e.ClientCert = []byte("x") }), "client_cert is not a PEM certificate"},
		{"client_key not PEM", tcp(func(e *container.Engine) { e.ClientKey = []byte("x") }), "client_key is not a PEM private key"},
		{"client_key encrypted", tcp(func(e *container.Engine) { e.ClientKey = encrypted }), "encrypted with a passphrase"},
		{"key of another certificate", tcp(func(e *container.Engine) { e.ClientKey = other.keyPEM }), "do not form a key pair"},
		{"client_cert expired", tcp(func(e *container.Engine) { e.ClientCert, e.ClientKey = expired.certPEM, expired.keyPEM }), "expired at"},
		{"server certificate as client_cert", tcp(func(e *container.Engine) { e.ClientCert, e.ClientKey = serverOnly.certPEM, serverOnly.keyPEM }), "lacks clientAuth"},
		{"server name with a port", tcp(func(e *container.Engine) { e.ServerName = "docker:2376" }), "tls_server_name"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.e.Validate(now)
			if tc.want == "" {
				if err != nil {
					t.Fatalf("refused: %v", err)
				}
				return
			}
			if err == nil || !errors.Is(err, container.ErrInvalidEngine) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %v, want ErrInvalidEngine saying %q", err, tc.want)
			}
			if strings.Contains(err.Error(), "PRIVATE KEY-----") || strings.Contains(err.Error(), string(client.keyPEM[40:80])) {
				t.Fatalf("the error quotes key material: %v", err)
			}
		})
	}
}
