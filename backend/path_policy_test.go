package backend

import (
	"context"
	"net/http"
	"reflect"
	"strings"
	"testing"

	"github.com/hashicorp/vault/sdk/logical"
)

// The trusted auth mounts live beside the policy: written alone or with it,
// validated, kept by a delete that goes back to the built-in policy, and
// handed to the policy as input.trusted_auth_mount_accessors.
func TestPolicyTrustedAuthMounts(t *testing.T) {
	b, s := newTestBackend(t, nil, nil)
	read := func() *logical.Response { return configReq(t, b, s, logical.ReadOperation, "configure/policy", nil) }
	if r := read(); !reflect.DeepEqual(r.Data["trusted_auth_mount_accessors"], []string{}) || len(r.Warnings) == 0 || !strings.Contains(r.Warnings[0], "denies every patch") {
		t.Fatalf("fresh read = %v %v, want no trusted mount and a warning", r.Data, r.Warnings)
	}
	for _, bad := range []string{"jwt/", "jwt", "auth/jwt", "auth_jwt_xyz"} {
		r, err := rawConfigReq(b, s, logical.UpdateOperation, "configure/policy", map[string]any{"trusted_auth_mount_accessors": bad})
		mustBadRequest(t, r, err, "trusted_auth_mount_accessors", bad, "vault read -field=accessor sys/auth/jwt")
	}
	r, err := rawConfigReq(b, s, logical.UpdateOperation, "configure/policy", map[string]any{})
	mustBadRequest(t, r, err, "nothing to write")

	configReq(t, b, s, logical.UpdateOperation, "configure/policy", map[string]any{"trusted_auth_mount_accessors": "auth_jwt_0a1b2c3d, auth_oidc_1a2b3c4d,auth_jwt_0a1b2c3d"})
	want := []string{"auth_jwt_0a1b2c3d", "auth_oidc_1a2b3c4d"}
	if r := read(); !reflect.DeepEqual(r.Data["trusted_auth_mount_accessors"], want) || r.Data["builtin"] != true || len(r.Warnings) != 0 {
		t.Fatalf("read = %v %v, want %v with the built-in policy", r.Data, r.Warnings, want)
	}
	// A custom policy written later keeps the mounts and sees them.
	echo := "package flant_gitops.patch\nviolations contains concat(\",\", input.trusted_auth_mount_accessors)\n"
	configReq(t, b, s, logical.UpdateOperation, "configure/policy", map[string]any{"policy": echo})
	if r := read(); !reflect.DeepEqual(r.Data["trusted_auth_mount_accessors"], want) || r.Data["builtin"] != false {
		t.Fatalf("read after the policy write = %v", r.Data)
	}
	resp, err := b.HandleRequest(context.Background(), &logical.Request{
		Operation: logical.UpdateOperation, Path: "patch/infra", Storage: s, MountPoint: "flant_gitops/",
		Data: map[string]any{"commands": []any{map[string]any{"path": "a.yml", "deleteFile": map[string]any{}}}},
	})
	if st := status(resp, err); st != http.StatusForbidden || !strings.Contains(errText(resp, err), "auth_jwt_0a1b2c3d,auth_oidc_1a2b3c4d") {
		t.Fatalf("patch = %d %q, want the policy to see the trusted mounts", st, errText(resp, err))
	}
	// Delete: back to the built-in policy, mounts kept; an empty write clears them.
	configReq(t, b, s, logical.DeleteOperation, "configure/policy", nil)
	if r := read(); !reflect.DeepEqual(r.Data["trusted_auth_mount_accessors"], want) || r.Data["builtin"] != true {
		t.Fatalf("read after delete = %v", r.Data)
	}
	configReq(t, b, s, logical.UpdateOperation, "configure/policy", map[string]any{"trusted_auth_mount_accessors": ""})
	if r := read(); !reflect.DeepEqual(r.Data["trusted_auth_mount_accessors"], []string{}) {
		t.Fatalf("read after clearing = %v", r.Data)
	}
}
