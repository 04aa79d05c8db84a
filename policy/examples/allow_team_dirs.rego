# An example custom policy for configure/policy: teams instead of projects.
#
# Members of the Vault identity group "team-<name>" may patch .yml/.yaml files
# under teams/<name>/ of the repositories listed in team_repositories; members
# of "gitops-admins" may patch any .yml/.yaml file of them. Everybody else,
# and a token without a Vault identity, is denied.
#
# Test it with: opa test policy/examples/
package flant_gitops.patch

team_repositories := {"infra", "infra-staging"}

admin_group := "gitops-admins"

# Directories the caller may patch, from its identity groups.
team_dirs contains sprintf("teams/%s/", [name]) if {
	some group in input.identity.groups
	startswith(group, "team-")
	name := substring(group, 5, -1)
	regex.match(`^[a-z0-9][a-z0-9-]*$`, name)
}

admin if admin_group in input.identity.groups

allowed_path(_) if admin

allowed_path(path) if {
	some dir in team_dirs
	startswith(path, dir)
}

yaml_file(path) if endswith(path, ".yml")

yaml_file(path) if endswith(path, ".yaml")

clean_path(path) if {
	not startswith(path, "/")
	every segment in split(path, "/") {
		not segment in {"", ".", ".."}
	}
}

violations contains "the caller has no Vault identity (root token or a token without an entity); log in through an auth method whose entity is in a team-<name> group" if {
	not input.identity
}

violations contains sprintf("repository %q is not open to team patches (only %s)", [input.repository, concat(", ", sort(team_repositories))]) if {
	not input.repository in team_repositories
}

violations contains sprintf("%q: only .yml and .yaml files may be patched", [cmd.path]) if {
	some cmd in input.commands
	not yaml_file(cmd.path)
}

violations contains sprintf("%q: not a clean relative path", [cmd.path]) if {
	some cmd in input.commands
	not clean_path(cmd.path)
}

violations contains sprintf("%q: outside the caller's team directories (%s)", [cmd.path, concat(", ", sort(team_dirs))]) if {
	input.identity
	some cmd in input.commands
	not allowed_path(cmd.path)
}
