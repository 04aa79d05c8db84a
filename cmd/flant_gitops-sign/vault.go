package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"strings"
	"time"

	"github.com/flant/flant_gitops/internal/tokenredirect"
)

// vaultClient reads the plugin's paths with the signer's Vault token, with
// the conventions of the CI client (flant_gitops-patch): VAULT_ADDR,
// VAULT_TOKEN, VAULT_CACERT, VAULT_NAMESPACE, no redirect that would carry
// the token elsewhere.
type vaultClient struct {
	addr      string
	token     string
	namespace string
	mount     string
	http      *http.Client
}

// maxVaultAnswer bounds what is read of an answer.
const maxVaultAnswer = 16 << 20

func newVaultClient(getenv func(string) string, mount string) (*vaultClient, error) {
	addr := strings.TrimRight(getenv("VAULT_ADDR"), "/")
	if u, err := url.Parse(addr); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, usagef("VAULT_ADDR %q is not an http(s) URL such as https://vault.example.com:8200", addr)
	}
	token := getenv("VAULT_TOKEN")
	if token == "" {
		return nil, usagef("VAULT_ADDR is set but VAULT_TOKEN is not: log in first (vault login), then export VAULT_TOKEN=$(vault print token)")
	}
	tr := http.DefaultTransport.(*http.Transport).Clone()
	if caFile := getenv("VAULT_CACERT"); caFile != "" {
		pem, err := os.ReadFile(caFile)
		if err != nil {
			return nil, usagef("VAULT_CACERT: %v", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, usagef("VAULT_CACERT: no PEM certificate in %s", caFile)
		}
		tr.TLSClientConfig = &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}
	}
	return &vaultClient{
		addr: addr, token: token, namespace: getenv("VAULT_NAMESPACE"), mount: mount,
		http: &http.Client{Transport: tr, CheckRedirect: tokenredirect.Check, Timeout: 2 * time.Minute},
	}, nil
}

// vaultError is an answer of Vault's that is not a success.
type vaultError struct {
	status int
	path   string
	msgs   []string
}

func (e *vaultError) Error() string {
	msg := strings.Join(e.msgs, "; ")
	if msg == "" {
		msg = http.StatusText(e.status)
	}
	return fmt.Sprintf("Vault answered %d to %s: %s", e.status, e.path, msg)
}

// read makes GET (or LIST) of <mount>/<path> and decodes its data into out.
func (c *vaultClient) read(ctx context.Context, method, path string, out any) error {
	full := c.mount + "/" + path
	req, err := http.NewRequestWithContext(ctx, method, c.addr+"/v1/"+full, nil)
	if err != nil {
		return fmt.Errorf("VAULT_ADDR %q: %w", c.addr, err)
	}
	req.Header.Set("X-Vault-Token", c.token)
	req.Header.Set("X-Vault-Request", "true")
	if c.namespace != "" {
		req.Header.Set("X-Vault-Namespace", c.namespace)
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return fmt.Errorf("ask Vault at %s: %w", c.addr, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxVaultAnswer))
	if err != nil {
		return fmt.Errorf("read Vault's answer to %s: %w", full, err)
	}
	var ans struct {
		Data   json.RawMessage `json:"data"`
		Errors []string        `json:"errors"`
	}
	if err := json.Unmarshal(body, &ans); err != nil && resp.StatusCode/100 == 2 {
		return fmt.Errorf("Vault's answer to %s is not JSON: %w", full, err)
	}
	if resp.StatusCode/100 != 2 {
		return &vaultError{status: resp.StatusCode, path: full, msgs: ans.Errors}
	}
	if out == nil || len(ans.Data) == 0 {
		return nil
	}
	if err := json.Unmarshal(ans.Data, out); err != nil {
		return fmt.Errorf("Vault's answer to %s: %w", full, err)
	}
	return nil
}

// pluginCheck is the answer of <mount>/signatures/COMMIT: the watch's own
// check of a commit, in the words status uses.
type pluginCheck struct {
	Commit   string   `json:"commit"`
	OK       bool     `json:"ok"`
	Verdict  string   `json:"verdict"`
	Required int      `json:"required"`
	Verified int      `json:"verified"`
	Missing  int      `json:"missing"`
	Signers  []string `json:"signers"`
	SignedBy []struct {
		Name string `json:"name"`
	} `json:"signed_by"`
	NotCounted []string `json:"not_counted"`
	Rules      []struct {
		Name      string   `json:"name"`
		OK        bool     `json:"ok"`
		Missing   int      `json:"missing"`
		CouldSign []string `json:"could_sign"`
	} `json:"rules"`
}

// errNoCheckPath is a plugin without signatures/COMMIT (an older version).
var errNoCheckPath = errors.New("the plugin has no signatures/ path")

// check asks the plugin to check commit.
func (c *vaultClient) check(ctx context.Context, commit string) (*pluginCheck, error) {
	var pc pluginCheck
	err := c.read(ctx, http.MethodGet, "signatures/"+commit, &pc)
	var ve *vaultError
	if errors.As(err, &ve) && ve.status == http.StatusNotFound && strings.Contains(strings.Join(ve.msgs, " "), "unsupported path") {
		return nil, errNoCheckPath
	}
	if err != nil {
		return nil, err
	}
	return &pc, nil
}
