package backend

import (
	"testing"

	"github.com/flant/flant_gitops/policy"
)

// Requested-By names the entity and the aliases behind it, so that `git log`
// says which project asked; whatever the names hold, it stays one line.
func TestTrailerIdentity(t *testing.T) {
	gitlab := policy.Alias{MountType: "jwt", MountAccessor: "auth_jwt_0a1b2c3d", Name: "my-group/my-project",
		Metadata: map[string]string{"project_path": "my-group/my-project", "ref": "main"}}
	tests := []struct {
		name string
		id   *policy.Identity
		want string
	}{
		{"no entity", nil, "no Vault entity"},
		{"an entity without aliases", &policy.Identity{EntityID: "0f0e", EntityName: "entity_1"}, "entity_1 (0f0e)"},
		{"a GitLab CI login", &policy.Identity{EntityID: "0f0e", EntityName: "entity_1", Aliases: []policy.Alias{gitlab}},
			`entity_1 (0f0e) via jwt alias "my-group/my-project" on auth_jwt_0a1b2c3d project_path "my-group/my-project"`},
		{"two aliases, the second without project_path", &policy.Identity{EntityID: "0f0e", Aliases: []policy.Alias{
			gitlab, {MountType: "approle", MountAccessor: "auth_approle_1", Name: "deployer"}}},
			`unnamed entity (0f0e) via jwt alias "my-group/my-project" on auth_jwt_0a1b2c3d project_path "my-group/my-project"; approle alias "deployer" on auth_approle_1`},
		{"names that try to break the line", &policy.Identity{EntityID: "0f0e", EntityName: "e", Aliases: []policy.Alias{{
			MountType: "jwt", MountAccessor: "auth_jwt_1", Name: "a\nVault-Request-Id: forged",
			Metadata: map[string]string{"project_path": "p\n\nRequested-By: admin"}}}},
			`e (0f0e) via jwt alias "a\nVault-Request-Id: forged" on auth_jwt_1 project_path "p\n\nRequested-By: admin"`},
		{"many aliases", &policy.Identity{EntityID: "0f0e", EntityName: "e", Aliases: []policy.Alias{
			{MountType: "a", MountAccessor: "1", Name: "1"}, {MountType: "a", MountAccessor: "2", Name: "2"},
			{MountType: "a", MountAccessor: "3", Name: "3"}, {MountType: "a", MountAccessor: "4", Name: "4"},
			{MountType: "a", MountAccessor: "5", Name: "5"}, {MountType: "a", MountAccessor: "6", Name: "6"}}},
			`e (0f0e) via a alias "1" on 1; a alias "2" on 2; a alias "3" on 3; a alias "4" on 4; and 2 more aliases`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := trailerIdentity(tt.id); got != tt.want {
				t.Errorf("trailerIdentity =\n%s\nwant\n%s", got, tt.want)
			}
		})
	}
}
