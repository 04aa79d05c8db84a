package vaulttest

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"
	"github.com/hashicorp/vault/api"
)

// JWTIssuer stands in for a CI vendor's OIDC issuer (GitLab, GitHub
// Actions): a signing key whose public half a JWT auth mount of a test Vault
// trusts through jwt_validation_pubkeys, as it would trust the vendor's
// discovery document, and the id_tokens signed with it.
type JWTIssuer struct {
	// URL is the iss claim and the mount's bound_issuer.
	URL string
	key *ecdsa.PrivateKey
	pub string
}

// NewJWTIssuer makes an issuer with a fresh P-256 key.
func NewJWTIssuer(t testing.TB, url string) *JWTIssuer {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	der, err := x509.MarshalPKIXPublicKey(&key.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	return &JWTIssuer{URL: url, key: key, pub: string(pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der}))}
}

// PublicKeyPEM is the key a JWT auth mount validates tokens with.
func (i *JWTIssuer) PublicKeyPEM() string { return i.pub }

// Mount enables Vault's JWT auth method at path on c (unless it is there)
// and makes it trust this issuer. Roles are the caller's.
func (i *JWTIssuer) Mount(t testing.TB, c *api.Client, path string) {
	t.Helper()
	auths, err := c.Sys().ListAuth()
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := auths[strings.Trim(path, "/")+"/"]; !ok {
		if err := c.Sys().EnableAuthWithOptions(path, &api.EnableAuthOptions{Type: "jwt"}); err != nil {
			t.Fatalf("enable jwt auth at %s: %v", path, err)
		}
	}
	if _, err := c.Logical().Write("auth/"+path+"/config", map[string]any{
		"jwt_validation_pubkeys": []string{i.pub},
		"bound_issuer":           i.URL,
	}); err != nil {
		t.Fatalf("configure jwt auth at %s: %v", path, err)
	}
}

// Token signs claims as the issuer would for audience: iss, aud, iat, nbf,
// exp (five minutes from now) and a unique jti are set here.
func (i *JWTIssuer) Token(t testing.TB, audience string, claims map[string]any) string {
	t.Helper()
	signer, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.ES256, Key: i.key}, (&jose.SignerOptions{}).WithType("JWT"))
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	all := make(map[string]any, len(claims)+6)
	for k, v := range claims {
		all[k] = v
	}
	all["iss"] = i.URL
	all["aud"] = audience
	all["iat"] = now.Unix()
	all["nbf"] = now.Add(-time.Minute).Unix()
	all["exp"] = now.Add(5 * time.Minute).Unix()
	all["jti"] = fmt.Sprintf("%d", now.UnixNano())
	tok, err := jwt.Signed(signer).Claims(all).Serialize()
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

// GitLabClaims are the claims of a GitLab CI id_token of the project at
// projectPath ("group/sub/project") on a protected ref of refType ("branch"
// or "tag").
func GitLabClaims(projectPath, ref, refType string) map[string]any {
	namespace := projectPath
	if i := strings.LastIndex(projectPath, "/"); i >= 0 {
		namespace = projectPath[:i]
	}
	return map[string]any{
		"sub":             "project_path:" + projectPath + ":ref_type:" + refType + ":ref:" + ref,
		"namespace_id":    "7",
		"namespace_path":  namespace,
		"project_id":      "42",
		"project_path":    projectPath,
		"user_login":      "ci-bot",
		"pipeline_source": "push",
		"ref":             ref,
		"ref_type":        refType,
		"ref_protected":   "true",
	}
}
