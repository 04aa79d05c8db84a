# The built-in patch policy of flant_gitops, used while configure/policy has no
# custom policy.
#
# A caller may patch only .yml/.yaml files under the directory named after its
# GitLab project: the project_path that the Vault JWT auth role copies from the
# CI job token into the alias metadata (claim_mappings: {project_path: project_path}).
# Only aliases on the auth mounts the operator named in configure/policy
# trusted_auth_mount_accessors count: with none named nobody may patch.
# A token without a Vault identity (the root token, a token made without an
# entity) is denied.
package flant_gitops.patch

# Auth methods whose alias metadata carries claims mapped by a role's claim_mappings.
jwt_mount_types := {"jwt", "oidc"}

trusted_mounts := {accessor | some accessor in input.trusted_auth_mount_accessors}

# The caller's JWT/OIDC aliases on trusted mounts.
trusted_aliases contains alias if {
	some alias in input.identity.aliases
	alias.mount_type in jwt_mount_types
	alias.mount_accessor in trusted_mounts
}

# Directories the caller may patch, one per project_path on a trusted alias.
project_dirs contains concat("", [dir, "/"]) if {
	some alias in trusted_aliases
	path := alias.metadata.project_path
	is_string(path)
	dir := trim_right(path, "/")
	dir != ""
	clean_path(dir)
}

yaml_file(path) if endswith(path, ".yml")

yaml_file(path) if endswith(path, ".yaml")

# The Vault layer cleans paths before asking; refusing unclean ones again keeps a
# "a/../b" path from passing the prefix check below if that ever regresses.
clean_path(path) if {
	not startswith(path, "/")
	every segment in split(path, "/") {
		not segment in {"", ".", ".."}
	}
}

# The trailing "/" of every directory in project_dirs gives the prefix check its
# boundary: "my-group/my-project2/x.yml" is not under "my-group/my-project/".
in_project_dir(path) if {
	some dir in project_dirs
	startswith(path, dir)
}

login_hint := "log in through a Vault JWT auth role whose claim_mappings copy the project_path claim of the CI job token (claim_mappings: {project_path: project_path})"

violations contains sprintf("%q: the caller has no Vault identity (root token or a token without an entity); %s", [cmd.path, login_hint]) if {
	not input.identity
	some cmd in input.commands
}

violations contains sprintf("the caller has no Vault identity (root token or a token without an entity); %s", [login_hint]) if {
	not input.identity
	count(input.commands) == 0
}

trust_hint := "name the auth mount of the CI logins with `vault write flant_gitops/configure/policy trusted_auth_mount_accessors=<accessor>` (`vault read -field=accessor sys/auth/jwt` shows it)"

violations contains sprintf("%q: no auth mount is trusted, so nobody may patch; %s", [cmd.path, trust_hint]) if {
	input.identity
	count(trusted_mounts) == 0
	some cmd in input.commands
}

violations contains sprintf("%q: the caller's Vault identity has no project_path in the metadata of a jwt or oidc alias on a trusted auth mount (%s); %s", [cmd.path, concat(", ", sort(trusted_mounts)), login_hint]) if {
	input.identity
	count(trusted_mounts) > 0
	count(project_dirs) == 0
	some cmd in input.commands
}

violations contains sprintf("%q: only .yml and .yaml files may be patched", [cmd.path]) if {
	some cmd in input.commands
	not yaml_file(cmd.path)
}

violations contains sprintf("%q: not a clean relative path (no leading /, no empty, . or .. segments)", [cmd.path]) if {
	some cmd in input.commands
	not clean_path(cmd.path)
}

violations contains sprintf("%q: outside the caller's project directory %s", [cmd.path, concat(", ", sort(project_dirs))]) if {
	count(project_dirs) > 0
	some cmd in input.commands
	not in_project_dir(cmd.path)
}
