package backend

import (
	"strings"
)

// A stored secret goes only to the address it was stored for: a write that
// changes the address must carry the secret again, so that whoever may edit
// the address but does not know the secret cannot read it off the wire.

// secretMustFollow is the 400 for a write that changes where a stored secret
// goes without giving the secret again.
func secretMustFollow(changed []string, secret, fix string) error {
	return invalidf("changing %s would send the stored %s to another place, and a stored secret goes only where it was written for: %s; nothing was changed",
		strings.Join(changed, ", "), secret, fix)
}

// boundField is a field that decides where a stored secret is sent, with
// its value before and after a write.
type boundField struct{ name, old, next string }

// changedBoundFields names the fields whose value the write changes.
func changedBoundFields(fields ...boundField) []string {
	var changed []string
	for _, f := range fields {
		if f.old != f.next {
			changed = append(changed, f.name)
		}
	}
	return changed
}

// vaultTargetChanges names the configure_vault_access fields that decide
// where the secret_id is sent and that differ between before and after.
func vaultTargetChanges(before, after *vaultAccessEntry) []string {
	return changedBoundFields(
		boundField{"vault_addr", before.VaultAddr, after.VaultAddr},
		boundField{"vault_cacert", before.VaultCACert, after.VaultCACert},
		boundField{"vault_tls_server_name", before.VaultTLSServerName, after.VaultTLSServerName},
		boundField{"approle_mount_point", before.ApproleMountPoint, after.ApproleMountPoint},
	)
}

// gitCredentialBoundURL is the URL a stored git credential may be sent to:
// the one recorded when it was written, or, for a credential written before
// configure existed (or before credentials recorded their URL), the URL
// configure had before this write. Empty means not bound yet.
func gitCredentialBoundURL(cred *gitCredentialEntry, previousRepoURL string) string {
	if cred.GitRepoURL != "" {
		return cred.GitRepoURL
	}
	return previousRepoURL
}
