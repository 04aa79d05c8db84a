package flant_gitops.patch_test

import data.flant_gitops.patch

gitlab_identity(project_path) := {
	"entity_id": "e-1",
	"entity_name": "gitlab-ci",
	"aliases": [{
		"mount_type": "jwt",
		"mount_accessor": "auth_jwt_0a1b2c3d",
		"name": project_path,
		"metadata": {"project_path": project_path},
	}],
	"groups": [],
}

gitlab_mount := "auth_jwt_0a1b2c3d"

github_mount := "auth_jwt_99999999"

request(identity, paths) := {
	"repository": "infra",
	"trusted_auth_mount_accessors": [gitlab_mount],
	"identity": identity,
	"commit": {"message": "Bump image", "author": {"name": "ci", "email": "ci@example.com"}},
	"commands": [{"path": p, "op": "setField", "field": "spec.values.image.tag"} | some p in paths],
}

anonymous(paths) := {
	"repository": "infra",
	"trusted_auth_mount_accessors": [gitlab_mount],
	"commit": {"message": "", "author": {"name": "", "email": ""}},
	"commands": [{"path": p, "op": "setField", "field": "a"} | some p in paths],
}

own := gitlab_identity("my-group/my-project")

test_own_project_yml_and_yaml_allowed if {
	count(patch.violations) == 0 with input as request(own, [
		"my-group/my-project/release.yml",
		"my-group/my-project/deep/dir/values.yaml",
	])
}

test_every_op_is_checked if {
	req := object.union(request(own, []), {"commands": [
		{"path": "my-group/my-project/new.yml", "op": "createFile", "field": ""},
		{"path": "other/old.yml", "op": "deleteFile", "field": ""},
	]})
	patch.violations == {`"other/old.yml": outside the caller's project directory my-group/my-project/`} with input as req
}

test_other_project_denied if {
	patch.violations == {`"other-group/x.yml": outside the caller's project directory my-group/my-project/`} with input as request(own, ["other-group/x.yml"])
}

test_prefix_needs_slash_boundary if {
	patch.violations == {`"my-group/my-project2/x.yml": outside the caller's project directory my-group/my-project/`} with input as request(own, ["my-group/my-project2/x.yml"])
}

test_project_dir_itself_is_not_a_file if {
	count(patch.violations) > 0 with input as request(own, ["my-group/my-project.yml"])
}

test_unclean_paths_denied if {
	every p in [
		"my-group/my-project/../other-group/x.yml",
		"my-group/my-project/./x.yml",
		"my-group/my-project//x.yml",
		"/my-group/my-project/x.yml",
	] {
		some msg in patch.violations with input as request(own, [p])
		contains(msg, "not a clean relative path")
		startswith(msg, sprintf("%q: ", [p]))
	}
}

test_non_yaml_denied_and_named if {
	patch.violations == {
		`"my-group/my-project/x.json": only .yml and .yaml files may be patched`,
		`"my-group/my-project/x.yml.bak": only .yml and .yaml files may be patched`,
	} with input as request(own, ["my-group/my-project/x.json", "my-group/my-project/x.yml.bak"])
}

test_one_violation_per_bad_command if {
	vs := patch.violations with input as request(own, ["my-group/my-project/ok.yml", "a.json", "b/c.yml"])
	count(vs) == 3
	count({m | some m in vs; startswith(m, `"a.json": `)}) == 2
	count({m | some m in vs; startswith(m, `"b/c.yml": `)}) == 1
}

test_no_identity_denied_with_hint if {
	vs := patch.violations with input as anonymous(["my-group/my-project/release.yml"])
	count(vs) == 1
	some msg in vs
	startswith(msg, `"my-group/my-project/release.yml": the caller has no Vault identity`)
	contains(msg, "claim_mappings")
}

test_no_identity_and_no_commands_still_denied if {
	count(patch.violations) == 1 with input as anonymous([])
}

test_no_project_path_denied_with_hint if {
	ident := object.union(own, {"aliases": [{"mount_type": "jwt", "mount_accessor": "auth_jwt_0a1b2c3d", "name": "x", "metadata": {"sub": "x"}}]})
	some msg in patch.violations with input as request(ident, ["my-group/my-project/release.yml"])
	contains(msg, "has no project_path")
	contains(msg, "claim_mappings")
}

test_project_path_from_non_jwt_alias_ignored if {
	ident := object.union(own, {"aliases": [{"mount_type": "userpass", "mount_accessor": "auth_jwt_0a1b2c3d", "name": "x", "metadata": {"project_path": "my-group/my-project"}}]})
	some msg in patch.violations with input as request(ident, ["my-group/my-project/release.yml"])
	contains(msg, "has no project_path")
}

test_oidc_alias_and_trailing_slash if {
	ident := object.union(own, {"aliases": [{"mount_type": "oidc", "mount_accessor": "auth_jwt_0a1b2c3d", "name": "x", "metadata": {"project_path": "my-org/my-repo/"}}]})
	count(patch.violations) == 0 with input as request(ident, ["my-org/my-repo/app.yaml"])
}

test_unclean_project_path_grants_nothing if {
	ident := object.union(own, {"aliases": [{"mount_type": "jwt", "mount_accessor": "auth_jwt_0a1b2c3d", "name": "x", "metadata": {"project_path": "../.."}}]})
	count(patch.violations) > 0 with input as request(ident, ["x.yml"])
}

test_any_jwt_alias_of_the_entity_counts if {
	ident := object.union(own, {"aliases": [
		{"mount_type": "approle", "mount_accessor": "auth_jwt_0a1b2c3d", "name": "r", "metadata": {}},
		{"mount_type": "jwt", "mount_accessor": "auth_jwt_0a1b2c3d", "name": "a", "metadata": {"project_path": "g/a"}},
		{"mount_type": "jwt", "mount_accessor": "auth_jwt_0a1b2c3d", "name": "b", "metadata": {"project_path": "g/b"}},
	]})
	count(patch.violations) == 0 with input as request(ident, ["g/a/x.yml", "g/b/y.yml"])
	patch.violations == {`"g/c/z.yml": outside the caller's project directory g/a/, g/b/`} with input as request(ident, ["g/c/z.yml"])
}

test_alias_of_an_untrusted_mount_grants_nothing if {
	# The same project_path from a second JWT mount (GitHub Actions next to
	# GitLab, a human SSO login) is not trusted.
	ident := object.union(own, {"aliases": [{"mount_type": "jwt", "mount_accessor": github_mount, "name": "x", "metadata": {"project_path": "my-group/my-project"}}]})
	vs := patch.violations with input as request(ident, ["my-group/my-project/release.yml"])
	count(vs) == 1
	some msg in vs
	contains(msg, "on a trusted auth mount (auth_jwt_0a1b2c3d)")
}

test_trusted_and_untrusted_aliases_only_trusted_count if {
	ident := object.union(own, {"aliases": [
		{"mount_type": "jwt", "mount_accessor": gitlab_mount, "name": "a", "metadata": {"project_path": "g/a"}},
		{"mount_type": "oidc", "mount_accessor": github_mount, "name": "b", "metadata": {"project_path": "g/b"}},
	]})
	count(patch.violations) == 0 with input as request(ident, ["g/a/x.yml"])
	patch.violations == {`"g/b/y.yml": outside the caller's project directory g/a/`} with input as request(ident, ["g/b/y.yml"])
}

test_second_trusted_mount if {
	ident := object.union(own, {"aliases": [{"mount_type": "jwt", "mount_accessor": github_mount, "name": "b", "metadata": {"project_path": "org/repo"}}]})
	req := object.union(request(ident, ["org/repo/x.yml"]), {"trusted_auth_mount_accessors": [gitlab_mount, github_mount]})
	count(patch.violations) == 0 with input as req
}

test_no_trusted_mount_denies_everyone if {
	req := object.union(request(own, ["my-group/my-project/release.yml"]), {"trusted_auth_mount_accessors": []})
	vs := patch.violations with input as req
	count(vs) == 1
	some msg in vs
	contains(msg, "no auth mount is trusted")
	contains(msg, "trusted_auth_mount_accessors")
}

test_trusted_accessor_of_a_non_jwt_mount_grants_nothing if {
	ident := object.union(own, {"aliases": [{"mount_type": "userpass", "mount_accessor": gitlab_mount, "name": "x", "metadata": {"project_path": "my-group/my-project"}}]})
	some msg in patch.violations with input as request(ident, ["my-group/my-project/release.yml"])
	contains(msg, "has no project_path")
}
