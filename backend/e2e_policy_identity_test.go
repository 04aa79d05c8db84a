package backend_test

import (
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"testing"

	"github.com/hashicorp/vault/api"
)

// echoPolicy reads every documented input field by name and reports it as a
// violation "<field>=<value>", so the test sees what the policy really got.
const echoPolicy = `package flant_gitops.patch

violations contains sprintf("repository=%s", [input.repository])
violations contains sprintf("trusted_auth_mount_accessors[]=%s", [a]) if some a in input.trusted_auth_mount_accessors
violations contains sprintf("identity.entity_id=%s", [input.identity.entity_id])
violations contains sprintf("identity.entity_name=%s", [input.identity.entity_name])
violations contains sprintf("identity.groups[]=%s", [g]) if some g in input.identity.groups
violations contains sprintf("identity.aliases[].mount_type=%s", [a.mount_type]) if some a in input.identity.aliases
violations contains sprintf("identity.aliases[].mount_accessor=%s", [a.mount_accessor]) if some a in input.identity.aliases
violations contains sprintf("identity.aliases[].name=%s", [a.name]) if some a in input.identity.aliases
violations contains sprintf("identity.aliases[].metadata.project_path=%s", [a.metadata.project_path]) if some a in input.identity.aliases
violations contains sprintf("commit.message=%s", [input.commit.message])
violations contains sprintf("commit.author.name=%s", [input.commit.author.name])
violations contains sprintf("commit.author.email=%s", [input.commit.author.email])
violations contains sprintf("commands[].path=%s", [c.path]) if some c in input.commands
violations contains sprintf("commands[].op=%s", [c.op]) if some c in input.commands
violations contains sprintf("commands[].field=%s", [c.field]) if some c in input.commands
`

// TestE2EPatchPolicyIdentityAndTrustedMounts: a second JWT mount (GitHub
// Actions next to GitLab) that Vault accepts the same tokens on gets nothing
// from the built-in policy until the operator names it, nobody gets anything
// with no mount named, and every documented input field holds what the real
// Vault says about the caller.
func TestE2EPatchPolicyIdentityAndTrustedMounts(t *testing.T) {
	e := newPatchE2E(t, map[string]string{"my-group/my-project/release.yml": releaseYML, "my-group/my-project/old.yml": "a: 1\n"})
	c := e.v.Client
	if err := c.Sys().EnableAuthWithOptions("github", &api.EnableAuthOptions{Type: "jwt"}); err != nil {
		t.Fatal(err)
	}
	for path, data := range map[string]map[string]any{
		"auth/github/config": {"jwt_validation_pubkeys": []string{e.ci.PublicKeyPEM()}, "bound_issuer": e2eIssuer},
		"auth/github/role/gitlab-ci": {
			"role_type": "jwt", "user_claim": "project_path", "bound_audiences": []string{e2eAudience},
			"claim_mappings": map[string]any{"project_path": "project_path"}, "token_policies": []string{"gitops-patch"},
		},
	} {
		if _, err := c.Logical().Write(path, data); err != nil {
			t.Fatalf("write %s: %v", path, err)
		}
	}
	gitlabMount, githubMount := authAccessor(t, e.v, "jwt"), authAccessor(t, e.v, "github")
	idToken := e.gitlabToken(t, "my-group/my-project", e2eAudience)
	gitlab, err := e.login(t, idToken)
	if err != nil {
		t.Fatal(err)
	}
	github, err := e.loginAt(t, "github", idToken)
	if err != nil {
		t.Fatal(err)
	}
	bump := func(tag string) map[string]any {
		return map[string]any{"commands": []any{setField("my-group/my-project/release.yml", "spec.values.image.tag", tag)}}
	}
	trust := func(accessors string) {
		t.Helper()
		if _, err := c.Logical().Write("flant_gitops/configure/policy", map[string]any{"trusted_auth_mount_accessors": accessors}); err != nil {
			t.Fatal(err)
		}
	}
	steps := []struct {
		name    string
		trusted string
		client  *api.Client
		status  int
		want    string
	}{
		{"the unnamed mount's token is denied", gitlabMount, github, http.StatusForbidden, "on a trusted auth mount (" + gitlabMount + ")"},
		{"the named mount's token patches", gitlabMount, gitlab, http.StatusOK, ""},
		{"no mount named: nobody patches", "", gitlab, http.StatusForbidden, "no auth mount is trusted"},
		{"both named: the second mount patches too", gitlabMount + "," + githubMount, github, http.StatusOK, ""},
	}
	for i, st := range steps {
		t.Run(st.name, func(t *testing.T) {
			trust(st.trusted)
			before := e.remote.Head(t)
			_, _, status, err := patchReq(st.client, bump(fmt.Sprintf("3.0.%d", i)))
			if status != st.status || (st.want != "" && !strings.Contains(err.Error(), st.want)) {
				t.Fatalf("status %d %v, want %d %q", status, err, st.status, st.want)
			}
			if moved := e.remote.Head(t) != before; moved != (st.status == http.StatusOK) {
				t.Fatalf("head moved %v for status %d", moved, status)
			}
		})
	}

	t.Run("every documented input field holds what Vault says", func(t *testing.T) {
		trust(gitlabMount)
		self, err := gitlab.Auth().Token().LookupSelf()
		if err != nil {
			t.Fatal(err)
		}
		entityID, _ := self.Data["entity_id"].(string)
		entity, err := c.Logical().Read("identity/entity/id/" + entityID)
		if err != nil || entity == nil {
			t.Fatalf("read entity %q: %v", entityID, err)
		}
		entityName, _ := entity.Data["name"].(string)
		if _, err := c.Logical().Write("identity/group", map[string]any{"name": "team-payments", "member_entity_ids": []string{entityID}}); err != nil {
			t.Fatal(err)
		}
		if _, err := c.Logical().Write("flant_gitops/configure/policy", map[string]any{"policy": echoPolicy}); err != nil {
			t.Fatalf("the echo policy does not compile: %v", err)
		}
		_, _, status, err := patchReq(gitlab, map[string]any{
			"commit": map[string]any{"message": "Bump image", "author": map[string]any{"name": "CI bot", "email": "ci@example.com"}},
			"commands": []any{
				setField("my-group/my-project/release.yml", "spec.values.image.tag", "4.0.0"),
				map[string]any{"path": "my-group/my-project/old.yml", "deleteFile": map[string]any{}},
			},
		})
		if status != http.StatusForbidden || err == nil {
			t.Fatalf("status %d %v, want the echo policy's 403", status, err)
		}
		_, list, _ := strings.Cut(err.Error(), "patch denied by the policy: ")
		got := strings.Split(strings.TrimSpace(strings.SplitN(list, "\n", 2)[0]), "; ")
		want := []string{
			"repository=infra",
			"trusted_auth_mount_accessors[]=" + gitlabMount,
			"identity.entity_id=" + entityID,
			"identity.entity_name=" + entityName,
			"identity.groups[]=team-payments",
			"identity.aliases[].mount_type=jwt",
			"identity.aliases[].mount_accessor=" + gitlabMount,
			"identity.aliases[].name=my-group/my-project",
			"identity.aliases[].metadata.project_path=my-group/my-project",
			"commit.message=Bump image",
			"commit.author.name=CI bot",
			"commit.author.email=ci@example.com",
			"commands[].path=my-group/my-project/release.yml",
			"commands[].path=my-group/my-project/old.yml",
			"commands[].op=setField",
			"commands[].op=deleteFile",
			"commands[].field=spec.values.image.tag",
			"commands[].field=",
		}
		slices.Sort(got)
		slices.Sort(want)
		if entityID == "" || entityName == "" || !slices.Equal(got, want) {
			t.Fatalf("the policy saw\n  %q\nVault says\n  %q", got, want)
		}

		// A field Vault never gives a plugin is refused when the policy is written.
		_, err = c.Logical().Write("flant_gitops/configure/policy", map[string]any{
			"policy": "package flant_gitops.patch\nviolations contains \"no admin\" if not \"admin\" in input.identity.policies\n",
		})
		var re *api.ResponseError
		if !errors.As(err, &re) || re.StatusCode != http.StatusBadRequest || !strings.Contains(err.Error(), "input.identity.policies") {
			t.Fatalf("policy reading input.identity.policies: %v, want a 400 naming the field", err)
		}
	})
}
