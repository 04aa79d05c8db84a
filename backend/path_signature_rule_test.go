package backend

import (
	"reflect"
	"strings"
	"testing"

	"github.com/hashicorp/vault/sdk/logical"

	"github.com/flant/flant_gitops/gitwatch/pgptest"
)

func TestSignatureRuleWriteReadListDelete(t *testing.T) {
	b, s := newTestBackend(t, nil, nil)
	mustOK(t, configReq(t, b, s, logical.UpdateOperation, "configure", minimalConfig()), "configure")
	mustOK(t, configReq(t, b, s, logical.UpdateOperation, "configure/signer/alice", map[string]any{"pgp_public_keys": pgptest.NewKey(t, "Alice").PublicArmored(t)}), "alice")
	mustOK(t, configReq(t, b, s, logical.UpdateOperation, "configure/trusted_pgp_public_key/bob", map[string]any{"public_key": pgptest.NewKey(t, "Bob").PublicArmored(t)}), "bob")

	resp := configReq(t, b, s, logical.UpdateOperation, "configure/signature_rule/prod", map[string]any{"paths": "prod/**,clusters/*/prod.yaml", "required_signers": 2, "signers": "bob,alice"})
	mustOK(t, resp, "write prod")
	want := map[string]any{"name": "prod", "paths": []string{"prod/**", "clusters/*/prod.yaml"}, "required_signers": 2, "signers": []string{"alice", "bob"}}
	if !reflect.DeepEqual(resp.Data, want) {
		t.Errorf("write answered %v, want %v", resp.Data, want)
	}
	mustOK(t, configReq(t, b, s, logical.UpdateOperation, "configure/signature_rule/prod", map[string]any{"required_signers": 1}), "lower it")
	resp = configReq(t, b, s, logical.ReadOperation, "configure/signature_rule/prod", nil)
	if resp.Data["required_signers"] != 1 || !reflect.DeepEqual(resp.Data["paths"], want["paths"]) {
		t.Errorf("read = %v", resp.Data)
	}
	if resp := configReq(t, b, s, logical.ListOperation, "configure/signature_rule/", nil); !reflect.DeepEqual(resp.Data["keys"], []string{"prod"}) {
		t.Errorf("list = %v", resp.Data)
	}
	ws, err := loadWatchSettings(t.Context(), s)
	if err != nil {
		t.Fatal(err)
	}
	if len(ws.PathRules) != 1 || ws.PathRules[0].Required != 1 || !reflect.DeepEqual(ws.PathRules[0].Signers, []string{"alice", "bob"}) {
		t.Errorf("watch rules = %+v", ws.PathRules)
	}
	// Deleting a signer a rule names warns.
	resp = configReq(t, b, s, logical.DeleteOperation, "configure/signer/alice", nil)
	if resp == nil || !strings.Contains(strings.Join(resp.Warnings, "\n"), `signature rule "prod" still names signer "alice"`) {
		t.Errorf("delete a named signer: %#v", resp)
	}
	if resp := configReq(t, b, s, logical.DeleteOperation, "configure/signature_rule/prod", nil); resp != nil && resp.IsError() {
		t.Fatal(resp.Error())
	}
	if resp := configReq(t, b, s, logical.ReadOperation, "configure/signature_rule/prod", nil); resp != nil {
		t.Errorf("read after delete = %v", resp)
	}
}

func TestSignatureRuleValidation(t *testing.T) {
	cases := []struct {
		name string
		data map[string]any
		want string
	}{
		{"no paths", map[string]any{"required_signers": 1}, "paths is missing"},
		{"zero signers", map[string]any{"paths": "prod/**", "required_signers": 0}, "at least 1"},
		{"absolute path", map[string]any{"paths": "/prod/**", "required_signers": 1}, "relative to the repository root"},
		{"folder with a slash", map[string]any{"paths": "prod/", "required_signers": 1}, `write "prod/**"`},
		{"** inside a segment", map[string]any{"paths": "prod/a**", "required_signers": 1}, "whole segment"},
		{"bad glob", map[string]any{"paths": "prod/[a", "required_signers": 1}, "not a valid glob"},
		{"unknown signer", map[string]any{"paths": "prod/**", "required_signers": 1, "signers": "mallory"}, `names "mallory"`},
		{"more required than named", map[string]any{"paths": "prod/**", "required_signers": 2, "signers": "alice"}, "could never be met"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			b, s := newTestBackend(t, nil, nil)
			mustOK(t, configReq(t, b, s, logical.UpdateOperation, "configure/signer/alice", map[string]any{"pgp_public_keys": pgptest.NewKey(t, "Alice").PublicArmored(t)}), "alice")
			resp := configReq(t, b, s, logical.UpdateOperation, "configure/signature_rule/r", tc.data)
			if resp == nil || !resp.IsError() || !strings.Contains(resp.Error().Error(), tc.want) {
				t.Fatalf("want a 400 saying %q, got %#v", tc.want, resp)
			}
		})
	}
	// A rule the usable signers cannot meet is stored, with a warning.
	b, s := newTestBackend(t, nil, nil)
	resp := configReq(t, b, s, logical.UpdateOperation, "configure/signature_rule/r", map[string]any{"paths": "**", "required_signers": 2})
	mustOK(t, resp, "unreachable rule")
	if len(resp.Warnings) != 1 || !strings.Contains(resp.Warnings[0], "only 0 usable signer(s)") {
		t.Errorf("warnings = %q", resp.Warnings)
	}
}
