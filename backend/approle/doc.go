// Package approle is the AppRole client of one flant_gitops mount: its
// session with the target Vault of the vault requests, and the rotation of
// the secret_id it logs in with. It owns its state and its lock; it knows
// nothing of the plugin's paths: the backend hands it configure_vault_access
// as a Target and its storage through Store, and the run, the paths and the
// periodic function call the Client's methods.
//
// # Session
//
// The target Vault is reached with an API client built from the Target
// alone: address, TLS server name and CA; no VAULT_* variable of the plugin
// process (address, token, namespace, headers, TLS verification, wrap TTL,
// proxy) has a say. It follows no plain HTTP redirect, retries nothing (a
// vault request may create something), and bounds every call by
// ClientTimeout.
//
// The client logs in at <mount>/login with role_id and secret_id and keeps
// the token in memory only: never stored, logged or returned. A token is
// handed out while more than a third of its TTL (and at least 5 seconds) is
// left; otherwise it is renewed, or, when renewal fails, replaced by a fresh
// login. At most one token of the mount is alive on the target: a replaced
// token is revoked with itself (revoke-self needs no policy), and so is the
// token of a session whose Target changed in anything that decides where or
// as whom the client talks (the identity: address, server name, CA, mount,
// role_id, secret_id). Reset revokes the token and forgets the session, for
// a deleted or rewritten configure_vault_access and the backend's Clean; an
// unreachable target delays it by at most 5 seconds. A failed revocation is
// logged: the token ends with its TTL.
//
// One mutex serialises every conversation with the target: login, renewal,
// rotation and the requests of a run (WithTarget), which are rare and short.
//
// # secret_id rotation
//
// With SecretIDTTL set, the secret_id is replaced once two thirds of it have
// passed since SecretIDIssuedAt, which leaves a third to retry a failed
// rotation. The run rotates before it logs in (WithTarget; a failure is
// logged and the current secret_id used until it expires), and so does the
// periodic function (PeriodicRotation: two storage reads when nothing is due),
// so a secret_id is replaced even when no run happens for longer than its
// TTL. A rotation:
//
//  1. generates a new secret_id at <mount>/role/<role_name>/secret-id,
//  2. stores the Rotation record (old and new secret_id, the new one's
//     accessor, the Target's Key) before anything else, so a crash at any
//     later step leaves a secret_id that works and a record that tells the
//     next call what to finish,
//  3. logs in with the new one; only the target's refusal proves it useless
//     and rolls the rotation back (an unreachable target keeps the record
//     for the next try),
//  4. makes it the configured one under the backend's ConfigMu, unless the
//     operator wrote configure_vault_access meanwhile (then their values
//     win and the new secret_id is destroyed),
//  5. destroys the old one at <mount>/role/<role_name>/secret-id/destroy
//     and drops the record; a failure keeps the record for the next try.
//
// A record is finished or rolled back by the next call: the new secret_id is
// configured, so only the old one is left to destroy; the old one is still
// configured, so the new one is proved by a login and committed, or rolled
// back; the operator wrote another one, so the unused new one is destroyed.
// A record made for another Key (the access moved to another address, CA,
// server name or mount) or for a deleted access is dropped without a word to
// any target: its secret_ids go nowhere but where they were made
// (ForgetRotation drops it as the paths move or delete the access).
//
// # Storage
//
// The client keeps one entry, RotationKey (StorageKeys), the Rotation
// record. It holds secret_ids: the backend seal-wraps it. The backend stores
// it, and keeps configure_vault_access, as its other entries (Vault's JSON
// entries) and shows both to the client through Store: the client reads the
// access as a Target, writes only a rotated secret_id into it, and reads,
// writes and drops its record, so it is tested alone with a fake Store.
// Errors name what failed and what to do; none carries a secret_id or token.
package approle
