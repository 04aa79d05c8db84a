package flant_gitops.patch_test

import data.flant_gitops.patch

request(groups, repository, paths) := {
	"repository": repository,
	"identity": {
		"entity_id": "e-1",
		"entity_name": "alice",
		"aliases": [{"mount_type": "oidc", "mount_accessor": "auth_jwt_0a1b2c3d", "name": "alice", "metadata": {}}],
		"groups": groups,
	},
	"commit": {"message": "", "author": {"name": "", "email": ""}},
	"commands": [{"path": p, "op": "setField", "field": "image.tag"} | some p in paths],
}

test_team_member_patches_own_team_dir if {
	count(patch.violations) == 0 with input as request(["team-payments"], "infra", ["teams/payments/api/release.yaml"])
}

test_two_teams if {
	count(patch.violations) == 0 with input as request(["team-payments", "team-search"], "infra", [
		"teams/payments/a.yml",
		"teams/search/b.yml",
	])
}

test_other_team_dir_denied if {
	patch.violations == {`"teams/search/a.yml": outside the caller's team directories (teams/payments/)`} with input as request(["team-payments"], "infra", ["teams/search/a.yml"])
}

test_team_prefix_boundary if {
	count(patch.violations) == 1 with input as request(["team-pay"], "infra", ["teams/payments/a.yml"])
}

test_odd_group_names_grant_nothing if {
	every group in ["team-", "team-..", "team-a/b", "team-Payments"] {
		count(patch.violations) > 0 with input as request([group], "infra", ["teams/a/b/x.yml"])
	}
}

test_admin_patches_anything_but_not_json if {
	count(patch.violations) == 0 with input as request(["gitops-admins"], "infra", ["clusters/prod/values.yaml"])
	patch.violations == {`"clusters/prod/x.json": only .yml and .yaml files may be patched`} with input as request(["gitops-admins"], "infra", ["clusters/prod/x.json"])
}

test_unclean_path_denied_even_for_admins if {
	some msg in patch.violations with input as request(["gitops-admins"], "infra", ["teams/../secrets.yml"])
	contains(msg, "not a clean relative path")
}

test_other_repository_denied if {
	patch.violations == {`repository "billing" is not open to team patches (only infra, infra-staging)`} with input as request(["team-payments"], "billing", ["teams/payments/a.yml"])
}

test_no_identity_denied if {
	req := object.remove(request([], "infra", ["teams/payments/a.yml"]), ["identity"])
	count(patch.violations) == 1 with input as req
}
