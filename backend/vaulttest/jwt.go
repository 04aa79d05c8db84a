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

// CIPatch says how SetUpCIPatch lets GitLab CI jobs patch a repository.
type CIPatch struct {
	// Issuer is the iss of the CI's id_tokens; Audience is the role's
	// bound_audiences.
	Issuer, Audience string
	// BoundClaims are the role's bound_claims; nil binds none.
	BoundClaims map[string]any
	// Repository is the name under configure/repository, reached at URL with
	// Username and Password.
	Repository, URL, Username, Password string
	// Accessor reads the JWT mount's accessor for configure/policy; nil
	// reads it from sys/auth through the client.
	Accessor func(t testing.TB) string
}

// SetUpCIPatch makes p.Repository a patch target of the plugin at MountPath
// through c, as an operator does for GitLab CI: a JWT auth mount at "jwt"
// trusting a new issuer, its role "gitlab-ci" whose tokens carry the policy
// "gitops-patch" (update on patch/*), the repository, and configure/policy
// trusting the mount. It returns the issuer that signs the jobs' id_tokens.
func SetUpCIPatch(t testing.TB, c *api.Client, p CIPatch) *JWTIssuer {
	t.Helper()
	ctx := t.Context()
	ci := NewJWTIssuer(t, p.Issuer)
	ci.Mount(t, c, "jwt")
	accessor := ""
	if p.Accessor != nil {
		accessor = p.Accessor(t)
	} else {
		auths, err := c.Sys().ListAuthWithContext(ctx)
		if err != nil {
			t.Fatalf("list auth mounts: %v", err)
		}
		if a := auths["jwt/"]; a != nil {
			accessor = a.Accessor
		}
		if accessor == "" {
			t.Fatal("no accessor for auth/jwt")
		}
	}
	role := map[string]any{
		"role_type":       "jwt",
		"user_claim":      "project_path",
		"bound_audiences": []string{p.Audience},
		"claim_mappings":  map[string]any{"project_path": "project_path"},
		"token_policies":  []string{"gitops-patch"},
		"token_ttl":       "10m",
	}
	if p.BoundClaims != nil {
		role["bound_claims"] = p.BoundClaims
	}
	writes := []struct {
		path string
		data map[string]any
	}{
		{"auth/jwt/role/gitlab-ci", role},
		{MountPath + "/configure/repository/" + p.Repository, map[string]any{
			"url": p.URL, "username": p.Username, "password": p.Password,
		}},
		{MountPath + "/configure/policy", map[string]any{"trusted_auth_mount_accessors": accessor}},
	}
	for _, w := range writes {
		if _, err := c.Logical().WriteWithContext(ctx, w.path, w.data); err != nil {
			t.Fatalf("write %s: %v", w.path, err)
		}
	}
	if err := c.Sys().PutPolicyWithContext(ctx, "gitops-patch", `path "`+MountPath+`/patch/*" { capabilities = ["update"] }`); err != nil {
		t.Fatalf("write policy gitops-patch: %v", err)
	}
	return ci
}
