package vaulttest

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/vault/api"
)

// TargetServerName is the only name in a Target's TLS certificate. Clients
// connect to 127.0.0.1, so verification passes only when they set it as the
// TLS server name.
const TargetServerName = "vault.test"

// Target is a second real Vault (a NoPlugin Server) that the plugin reaches
// as a client: the target of vault requests. Besides its plain dev listener
// it listens with TLS on loopback, with a certificate for TargetServerName
// signed by a CA made for the test, and writes a raw audit log of every
// request so a test can learn each token and secret_id the target handed out.
type Target struct {
	// Addr is https://127.0.0.1:PORT, the TLS listener.
	Addr string
	// CACert is the PEM of the CA that signed the certificate.
	CACert string
	// Token is the root token.
	Token string
	// Client talks to Addr with the root token, verifying TLS against
	// CACert and TargetServerName.
	Client *api.Client

	server    *Server
	auditPath string
}

// NewTarget starts a target Vault and stops it when the test ends. It fails
// the test when no vault binary can be found.
func NewTarget(t testing.TB) *Target {
	t.Helper()
	dir := t.TempDir()
	caPEM, certPEM, keyPEM := targetCertificates(t)
	certFile, keyFile := filepath.Join(dir, "server.pem"), filepath.Join(dir, "server-key.pem")
	for path, b := range map[string][]byte{certFile: certPEM, keyFile: keyPEM} {
		if err := os.WriteFile(path, b, 0o600); err != nil {
			t.Fatalf("vaulttest: write %s: %v", path, err)
		}
	}
	port, err := freePort()
	if err != nil {
		t.Fatalf("vaulttest: %v", err)
	}
	tlsAddr := fmt.Sprintf("127.0.0.1:%d", port)
	srv := NewServer(t, &Options{
		NoPlugin: true,
		Config:   fmt.Sprintf("listener \"tcp\" {\n  address = %q\n  tls_cert_file = %q\n  tls_key_file = %q\n}\n", tlsAddr, certFile, keyFile),
		// tlssha1=1 lets busybox wget (whose TLS 1.2 client sends no
		// signature_algorithms) reach it from the test container; Go
		// clients negotiate modern algorithms regardless.
		Env: []string{"GODEBUG=tlssha1=1"},
	})

	tg := &Target{Addr: "https://" + tlsAddr, CACert: string(caPEM), Token: srv.Token, server: srv}
	c, err := tg.NewClient(string(caPEM), TargetServerName)
	if err != nil {
		t.Fatalf("vaulttest: target vault client: %v", err)
	}
	c.SetToken(srv.Token)
	tg.Client = c

	ctx, cancel := context.WithTimeout(context.Background(), startTimeout)
	defer cancel()
	tg.auditPath = filepath.Join(dir, "audit.log")
	if err := c.Sys().EnableAuditWithOptionsWithContext(ctx, "file", &api.EnableAuditOptions{
		Type:    "file",
		Options: map[string]string{"file_path": tg.auditPath, "log_raw": "true"},
	}); err != nil {
		t.Fatalf("vaulttest: enable raw audit log on the target vault over TLS: %v\n%s", err, tail(srv.Log(), 40))
	}
	return tg
}

// NewClient returns a client without token for the target that trusts
// caPEM and verifies serverName ("" means the host of Addr, which the
// certificate does not name). It reads nothing from the environment.
func (tg *Target) NewClient(caPEM, serverName string) (*api.Client, error) {
	cfg := api.DefaultConfig()
	cfg.Address = tg.Addr
	if err := cfg.ConfigureTLS(&api.TLSConfig{CACertBytes: []byte(caPEM), TLSServerName: serverName}); err != nil {
		return nil, err
	}
	c, err := api.NewClient(cfg)
	if err != nil {
		return nil, err
	}
	c.ClearToken()
	c.ClearNamespace()
	return c, nil
}

// AuditLog returns the raw audit log: every request and response the target
// served, with tokens and secret_ids in clear.
func (tg *Target) AuditLog(t testing.TB) []byte {
	t.Helper()
	b, err := os.ReadFile(tg.auditPath)
	if err != nil {
		t.Fatalf("read target audit log: %v", err)
	}
	return b
}

// Log is the target server's output so far.
func (tg *Target) Log() string { return tg.server.Log() }

// targetCertificates makes a CA and a server certificate naming only
// TargetServerName (no IP address), in PEM.
func targetCertificates(t testing.TB) (caPEM, certPEM, keyPEM []byte) {
	t.Helper()
	ca, caKey := NewTestCA(t, "flant_gitops test target CA")
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatalf("server key: %v", err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(2),
		Subject:      pkix.Name{CommonName: TargetServerName},
		DNSNames:     []string{TargetServerName},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
	if err != nil {
		t.Fatalf("server certificate: %v", err)
	}
	keyDER, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatalf("marshal server key: %v", err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: ca.Raw}),
		pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: keyDER})
}

// NewTestCA makes a self-signed CA certificate and its key; a second call
// gives an unrelated CA, for tests that need a wrong one.
func NewTestCA(t testing.TB, name string) (*x509.Certificate, *ecdsa.PrivateKey) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatalf("CA key: %v", err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: name},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(24 * time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatalf("CA certificate: %v", err)
	}
	ca, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatalf("parse CA certificate: %v", err)
	}
	return ca, key
}

// CACertPEM encodes a certificate made by NewTestCA.
func CACertPEM(ca *x509.Certificate) string {
	return strings.TrimSpace(string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: ca.Raw}))) + "\n"
}
