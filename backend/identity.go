package backend

import (
	"fmt"
	"maps"
	"sort"
	"strings"

	"github.com/hashicorp/vault/sdk/logical"

	"github.com/flant/flant_gitops/policy"
)

// callerIdentity builds the policy's view of who is asking from the Vault
// entity behind the request's token. A token without an entity (the root
// token, a token created without one) has no identity: nil, and the built-in
// policy denies it.
func callerIdentity(sys logical.SystemView, entityID string) (*policy.Identity, error) {
	if entityID == "" {
		return nil, nil
	}
	ent, err := sys.EntityInfo(entityID)
	if err != nil {
		return nil, fmt.Errorf("reading the caller's Vault entity %s: %w", entityID, err)
	}
	if ent == nil || ent.Disabled {
		return nil, nil
	}
	groups, err := sys.GroupsForEntity(entityID)
	if err != nil {
		return nil, fmt.Errorf("reading the groups of the caller's Vault entity %s: %w", entityID, err)
	}
	id := &policy.Identity{EntityID: ent.ID, EntityName: ent.Name}
	for _, a := range ent.Aliases {
		if a == nil {
			continue
		}
		// The SDK tells a plugin the auth mount's accessor, not its path.
		id.Aliases = append(id.Aliases, policy.Alias{
			MountType:     a.MountType,
			MountAccessor: a.MountAccessor,
			Name:          a.Name,
			Metadata:      maps.Clone(a.Metadata),
		})
	}
	for _, g := range groups {
		if g != nil {
			id.Groups = append(id.Groups, g.Name)
		}
	}
	sort.Strings(id.Groups)
	return id, nil
}

// maxTrailerAliases bounds how many aliases Requested-By lists.
const maxTrailerAliases = 4

// trailerIdentity names the caller in the commit trailers: the entity, and
// the aliases behind it (Vault does not tell a plugin which one the token
// was made from; an entity made by a CI login has one), each with its auth
// mount and, when the role maps it, the project_path, so that `git log`
// says which project asked.
func trailerIdentity(id *policy.Identity) string {
	if id == nil {
		return "no Vault entity"
	}
	name := id.EntityName
	if name == "" {
		name = "unnamed entity"
	}
	var b strings.Builder
	fmt.Fprintf(&b, "%s (%s)", name, id.EntityID)
	for i, a := range id.Aliases {
		if i == maxTrailerAliases {
			fmt.Fprintf(&b, "; and %d more aliases", len(id.Aliases)-i)
			break
		}
		sep := " via"
		if i > 0 {
			sep = ";"
		}
		fmt.Fprintf(&b, "%s %s alias %q on %s", sep, a.MountType, a.Name, a.MountAccessor)
		if p, ok := a.Metadata["project_path"]; ok {
			fmt.Fprintf(&b, " project_path %q", p)
		}
	}
	return b.String()
}
