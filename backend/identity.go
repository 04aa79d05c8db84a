package backend

import (
	"fmt"
	"maps"
	"sort"

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

// trailerIdentity names the caller in the commit trailers.
func trailerIdentity(id *policy.Identity) string {
	if id == nil {
		return "no Vault entity"
	}
	name := id.EntityName
	if name == "" {
		name = "unnamed entity"
	}
	return fmt.Sprintf("%s (%s)", name, id.EntityID)
}
