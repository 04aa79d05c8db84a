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

// vaultTargetChanges names the configure_vault_access fields that decide
// where the secret_id is sent and that differ between before and after.
func vaultTargetChanges(before, after *vaultAccessEntry) []string {
	var changed []string
	for _, f := range []struct {
		name      string
		old, next string
	}{
		{"vault_addr", before.VaultAddr, after.VaultAddr},
		{"vault_cacert", before.VaultCACert, after.VaultCACert},
		{"vault_tls_server_name", before.VaultTLSServerName, after.VaultTLSServerName},
		{"approle_mount_point", before.ApproleMountPoint, after.ApproleMountPoint},
	} {
		if f.old != f.next {
			changed = append(changed, f.name)
		}
	}
	return changed
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
