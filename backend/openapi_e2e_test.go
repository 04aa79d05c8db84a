package backend

import (
	"context"
	"encoding/json"
	"sort"
	"strings"
	"testing"

	"github.com/hashicorp/vault/sdk/logical"

	"github.com/flant/flant_gitops/backend/vaulttest"
)

// TestOpenAPIThroughRealVault checks that a real Vault, with the plugin
// running as its own process, publishes the same operation ids and typed
// responses as the document API.md is generated from.
func TestOpenAPIThroughRealVault(t *testing.T) {
	v := vaulttest.NewServer(t, nil)
	req := v.Client.NewRequest("GET", "/v1/sys/internal/specs/openapi")
	resp, err := v.Client.RawRequestWithContext(context.Background(), req)
	if err != nil {
		t.Fatalf("GET sys/internal/specs/openapi: %v", err)
	}
	defer resp.Body.Close()
	type operation struct {
		OperationID string `json:"operationId"`
		Responses   map[string]struct {
			Description string         `json:"description"`
			Content     map[string]any `json:"content"`
		} `json:"responses"`
	}
	var spec struct {
		Paths map[string]struct {
			Get    *operation `json:"get"`
			Post   *operation `json:"post"`
			Delete *operation `json:"delete"`
		} `json:"paths"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&spec); err != nil {
		t.Fatal(err)
	}
	doc, err := OpenAPI(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	// Operations answering a raw body (metrics in the Prometheus text
	// format) declare a media type and a description, no JSON schema.
	raw := map[string]bool{}
	b := newSchemaTestBackend(t)
	for _, o := range apiOps(doc) {
		if p := b.Route(strings.TrimPrefix(o.path, "/")); p != nil && o.method == "GET" {
			if r, _, err := responseSchemaOf(p, logical.ReadOperation); err == nil && r != nil && isRaw(r) {
				raw[o.op.OperationID] = true
			}
		}
	}
	var served []string
	for p, item := range spec.Paths {
		if !strings.HasPrefix(p, "/"+vaulttest.MountPath+"/") {
			continue
		}
		for method, op := range map[string]*operation{"GET": item.Get, "POST": item.Post, "DELETE": item.Delete} {
			if op == nil {
				continue
			}
			served = append(served, op.OperationID)
			ok, has200 := op.Responses["200"]
			if raw[op.OperationID] {
				if !has200 || ok.Description == "" {
					t.Errorf("%s %s (%s): Vault serves no description of the raw answer", method, p, op.OperationID)
				}
				continue
			}
			if _, has204 := op.Responses["204"]; !has204 && (!has200 || ok.Content == nil) {
				t.Errorf("%s %s (%s): Vault serves no response schema", method, p, op.OperationID)
			}
		}
	}
	var want []string
	for _, o := range apiOps(doc) {
		want = append(want, o.op.OperationID)
	}
	sort.Strings(served)
	sort.Strings(want)
	if strings.Join(served, " ") != strings.Join(want, " ") {
		t.Fatalf("Vault serves operation ids\n%v\nthe reference documents\n%v", served, want)
	}
}
