package approle

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/hashicorp/vault/api"
)

// RotationKey is the storage key of the rotation record (Rotation): it
// holds secret_ids, so the backend seal-wraps it.
const RotationKey = "config/vault_access_rotation"

// StorageKeys lists the keys the client writes, for the backend's table of
// storage keys. Every one holds a secret.
func StorageKeys() []string { return []string{RotationKey} }

// Store is one request's view of the mount for the client: its rotation
// record, which it owns, and configure_vault_access, which the backend owns,
// stores and validates. The backend stores both as Vault's JSON entries.
type Store interface {
	// Target returns configure_vault_access; nil when it is not written.
	Target(ctx context.Context) (*Target, error)
	// SetSecretID makes secretID, issued at issuedAt, the configured one,
	// keeping every other field. The client holds Config.ConfigMu.
	SetSecretID(ctx context.Context, secretID string, issuedAt time.Time) error
	// Rotation returns the record at RotationKey; nil when there is none.
	Rotation(ctx context.Context) (*Rotation, error)
	PutRotation(ctx context.Context, rot *Rotation) error
	DropRotation(ctx context.Context) error
}

// Rotation is the write-ahead record of one rotation: while it
// exists both secret_ids are in storage, so a crash at any step leaves at
// least one that works, and the next call finishes or rolls back.
type Rotation struct {
	OldSecretID         string    `json:"old_secret_id"`
	NewSecretID         string    `json:"new_secret_id"`
	NewSecretIDAccessor string    `json:"new_secret_id_accessor"`
	StartedAt           time.Time `json:"started_at"`
	// Target is Target.Key of the access the rotation was made for: its
	// secret_ids are never sent anywhere else. Empty in records written
	// before it existed, which count as made for the current target.
	Target string `json:"target,omitempty"`
}

// secretIDRotationDue says whether the secret_id should be replaced at now:
// once two thirds of secret_id_ttl have passed since it was issued, which
// leaves a third of its life to retry a failed rotation.
func secretIDRotationDue(t *Target, now time.Time) bool {
	if t == nil || t.SecretIDTTL <= 0 || t.SecretID == "" {
		return false
	}
	return !now.Before(t.SecretIDIssuedAt.Add(t.SecretIDTTL * 2 / 3))
}

func (t Target) rolePath(suffix string) string {
	return t.mount() + "/role/" + t.RoleName + suffix
}

// RotateSecretID finishes a rotation a crash left behind and rotates the
// secret_id when it is due. PeriodicRotation calls it, so a secret_id is
// renewed even when no run happens for longer than its TTL.
func (a *Client) RotateSecretID(ctx context.Context, s Store) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.rotateSecretIDLocked(ctx, s)
}

// Login returns the base client for the configured target and a token for
// it that is good for at least a third of its TTL; pass both to As.
type Login func() (*api.Client, string, error)

// WithTarget runs fn under the client's lock, after finishing or making a
// due secret_id rotation (a failure is logged: the current secret_id works
// until it expires), with the configured access (nil when there is none)
// and a way to get a token for it. A storage error comes back unwrapped.
func (a *Client) WithTarget(ctx context.Context, s Store, fn func(t *Target, login Login) error) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	if err := a.rotateSecretIDLocked(ctx, s); err != nil {
		a.logger().Error("secret_id rotation failed; the current secret_id is used until it expires", "error", err)
	}
	t, err := s.Target(ctx)
	if err != nil {
		return err
	}
	return fn(t, func() (*api.Client, string, error) {
		if t == nil {
			return nil, "", errors.New("configure_vault_access is not written")
		}
		return a.tokenLocked(ctx, *t)
	})
}

// PeriodicRotation is the periodic function's share: two storage reads when
// nothing is due, so the tick stays fast; failures are logged and retried
// on the next tick while the old secret_id still works.
func (a *Client) PeriodicRotation(ctx context.Context, s Store) {
	rot, err := s.Rotation(ctx)
	if err == nil && rot == nil {
		var t *Target
		t, err = s.Target(ctx)
		if err == nil && !secretIDRotationDue(t, a.now()) {
			return
		}
	}
	if err == nil {
		err = a.RotateSecretID(ctx, s)
	}
	if err != nil {
		a.logger().Error("secret_id rotation failed; retried on the next periodic tick", "error", err)
	}
}

// rotateSecretIDLocked: generate a new secret_id for role_name, store it
// next to the old one, log in with it, make it the configured one, destroy
// the old one on the target, drop the old one from storage. a.mu is held.
func (a *Client) rotateSecretIDLocked(ctx context.Context, s Store) error {
	if err := a.recoverSecretIDRotationLocked(ctx, s); err != nil {
		return err
	}
	cur, err := s.Target(ctx)
	if err != nil || !secretIDRotationDue(cur, a.now()) {
		return err
	}
	t := *cur
	if t.RoleName == "" {
		return errors.New("secret_id_ttl is set but role_name is not: set role_name in configure_vault_access so the plugin can rotate the secret_id before it expires")
	}
	c, token, err := a.tokenLocked(ctx, t)
	if err != nil {
		return fmt.Errorf("rotate secret_id: %w", err)
	}
	gen, err := As(c, token, "").Logical().WriteWithContext(ctx, t.rolePath("/secret-id"), nil)
	if err != nil {
		return fmt.Errorf("rotate secret_id: generate a new one at %s on %s (the AppRole token needs \"update\" on it and on %s): %w",
			t.rolePath("/secret-id"), t.Addr, t.rolePath("/secret-id/destroy"), err)
	}
	newID, _ := dataString(gen, "secret_id")
	newAccessor, _ := dataString(gen, "secret_id_accessor")
	if newID == "" {
		return fmt.Errorf("rotate secret_id: %s on %s answered without a secret_id", t.rolePath("/secret-id"), t.Addr)
	}
	if ttl, ok := dataInt(gen, "secret_id_ttl"); ok && ttl > 0 && time.Duration(ttl)*time.Second < t.SecretIDTTL {
		a.logger().Warn("the role's secret_id_ttl on the target Vault is shorter than configure_vault_access secret_id_ttl; set it no longer than the role's, or the secret_id expires before the plugin rotates it",
			"role_name", t.RoleName, "role_secret_id_ttl", (time.Duration(ttl) * time.Second).String(), "secret_id_ttl", t.SecretIDTTL.String())
	}
	rot := &Rotation{OldSecretID: t.SecretID, NewSecretID: newID, NewSecretIDAccessor: newAccessor, StartedAt: a.now(), Target: t.Key()}
	if err := s.PutRotation(ctx, rot); err != nil {
		a.destroySecretIDLocked(ctx, c, token, t, "", newAccessor)
		return fmt.Errorf("rotate secret_id: %w", err)
	}
	return a.commitSecretIDRotationLocked(ctx, s, t, rot)
}

// commitSecretIDRotationLocked proves the new secret_id by logging in with
// it, makes it the configured one, then destroys the old one. A failed login
// rolls the rotation back; the old secret_id is still configured then.
func (a *Client) commitSecretIDRotationLocked(ctx context.Context, s Store, t Target, rot *Rotation) error {
	c, err := a.clientLocked(ctx, t)
	if err != nil {
		return fmt.Errorf("rotate secret_id: %w", err)
	}
	fresh, err := approleLoginWith(ctx, c, t, rot.NewSecretID, a.now)
	if err != nil {
		// Only the target's refusal proves the new secret_id useless; when
		// the target was unreachable the record stays for the next try.
		var re *api.ResponseError
		if errors.As(err, &re) {
			a.rollBackSecretIDRotationLocked(ctx, s, t, rot)
		}
		return fmt.Errorf("rotate secret_id: log in with the new secret_id: %w", err)
	}
	cur, changed, err := a.swapSecretID(ctx, s, t, rot)
	if err != nil {
		a.revoke(ctx, c, fresh)
		return fmt.Errorf("rotate secret_id: %w", err)
	}
	if changed {
		a.revoke(ctx, c, fresh)
		a.rollBackSecretIDRotationLocked(ctx, s, t, rot)
		return nil
	}
	// The session now belongs to the new secret_id; the token obtained with
	// the old one is revoked.
	a.identity = cur.identity()
	a.replaceTokenLocked(ctx, fresh)
	a.logger().Info("rotated the AppRole secret_id on the target Vault", "vault_addr", t.Addr, "role_name", t.RoleName, "next_rotation_after", (cur.SecretIDTTL * 2 / 3).String())
	return a.finishSecretIDRotationLocked(ctx, s, *cur, rot)
}

// swapSecretID makes the rotation's new secret_id the configured one, under
// configMu so that an operator's write is not lost. changed reports that the
// operator wrote configure_vault_access since the rotation started (or
// deleted it); their values win and nothing is written.
func (a *Client) swapSecretID(ctx context.Context, s Store, t Target, rot *Rotation) (cur *Target, changed bool, err error) {
	a.configMu.Lock()
	defer a.configMu.Unlock()
	cur, err = s.Target(ctx)
	if err != nil {
		return nil, false, err
	}
	if cur == nil || cur.SecretID != rot.OldSecretID || cur.identity() != t.identity() {
		return nil, true, nil
	}
	cur.SecretID = rot.NewSecretID
	cur.SecretIDIssuedAt = a.now()
	if err := s.SetSecretID(ctx, cur.SecretID, cur.SecretIDIssuedAt); err != nil {
		return nil, false, err
	}
	return cur, false, nil
}

// finishSecretIDRotationLocked destroys the old secret_id on the target and
// then forgets it. If destroying fails the record stays and the next call
// tries again; the new secret_id is already in use either way.
func (a *Client) finishSecretIDRotationLocked(ctx context.Context, s Store, t Target, rot *Rotation) error {
	c, token, err := a.tokenLocked(ctx, t)
	if err != nil {
		return fmt.Errorf("rotate secret_id: destroy the old secret_id: %w", err)
	}
	if rot.OldSecretID != "" {
		_, err := As(c, token, "").Logical().WriteWithContext(ctx, t.rolePath("/secret-id/destroy"), map[string]any{"secret_id": rot.OldSecretID})
		if err != nil {
			return fmt.Errorf("rotate secret_id: destroy the old secret_id at %s on %s (the new one is in use; retried on the next tick): %w",
				t.rolePath("/secret-id/destroy"), t.Addr, err)
		}
	}
	return s.DropRotation(ctx)
}

// rollBackSecretIDRotationLocked destroys the unused new secret_id (best
// effort: it is only in our storage) and forgets the rotation.
func (a *Client) rollBackSecretIDRotationLocked(ctx context.Context, s Store, t Target, rot *Rotation) {
	if c, token, err := a.tokenLocked(ctx, t); err == nil {
		a.destroySecretIDLocked(ctx, c, token, t, rot.NewSecretID, rot.NewSecretIDAccessor)
	} else {
		a.logger().Warn("could not log in to destroy an unused secret_id; it expires with its TTL", "role_name", t.RoleName, "error", err)
	}
	if err := s.DropRotation(ctx); err != nil {
		a.logger().Error("dropping the rolled-back secret_id rotation failed; retried on the next tick", "error", err)
	}
}

// destroySecretIDLocked destroys an unused secret_id by accessor when known.
func (a *Client) destroySecretIDLocked(ctx context.Context, c *api.Client, token string, t Target, secretID, accessor string) {
	var err error
	switch {
	case accessor != "":
		_, err = As(c, token, "").Logical().WriteWithContext(ctx, t.rolePath("/secret-id-accessor/destroy"), map[string]any{"secret_id_accessor": accessor})
	case secretID != "":
		_, err = As(c, token, "").Logical().WriteWithContext(ctx, t.rolePath("/secret-id/destroy"), map[string]any{"secret_id": secretID})
	default:
		return
	}
	if err != nil {
		a.logger().Warn("destroying an unused secret_id on the target Vault failed; it expires with its TTL", "role_name", t.RoleName, "error", err)
	}
}

// recoverSecretIDRotationLocked finishes or rolls back a rotation that a
// crash (or a failed step) left in storage:
//   - the new secret_id is configured: only the old one is left to destroy;
//   - the old one is still configured: commit if the new one logs in,
//     otherwise roll back;
//   - the operator wrote another secret_id (or deleted the access): drop
//     the unused new one.
func (a *Client) recoverSecretIDRotationLocked(ctx context.Context, s Store) error {
	rot, err := s.Rotation(ctx)
	if err != nil || rot == nil {
		return err
	}
	cur, err := s.Target(ctx)
	if err != nil {
		return err
	}
	if cur == nil {
		return s.DropRotation(ctx)
	}
	if rot.Target != "" && rot.Target != cur.Key() {
		// The operator moved the access to another target: the record's
		// secret_ids belong to the old one and go nowhere.
		a.logger().Warn("dropping a secret_id rotation made for a target Vault that is no longer configured; its unused secret_id expires with its TTL there", "started_at", rot.StartedAt)
		return s.DropRotation(ctx)
	}
	t := *cur
	switch t.SecretID {
	case rot.NewSecretID:
		return a.finishSecretIDRotationLocked(ctx, s, t, rot)
	case rot.OldSecretID:
		a.logger().Info("finishing a secret_id rotation interrupted by a restart", "role_name", t.RoleName, "started_at", rot.StartedAt)
		return a.commitSecretIDRotationLocked(ctx, s, t, rot)
	default:
		a.rollBackSecretIDRotationLocked(ctx, s, t, rot)
		return nil
	}
}

func dataString(s *api.Secret, key string) (string, bool) {
	if s == nil || s.Data == nil {
		return "", false
	}
	v, ok := s.Data[key].(string)
	return v, ok
}

func dataInt(s *api.Secret, key string) (int64, bool) {
	if s == nil || s.Data == nil {
		return 0, false
	}
	switch v := s.Data[key].(type) {
	case float64:
		return int64(v), true
	case interface{ Int64() (int64, error) }:
		n, err := v.Int64()
		return n, err == nil
	}
	return 0, false
}

// ForgetRotation drops a rotation in flight, for a configure_vault_access
// that is deleted or moved to another target: its secret_ids belong to the
// old one and go nowhere. The caller holds Config.ConfigMu.
func (a *Client) ForgetRotation(ctx context.Context, s Store) error {
	return s.DropRotation(ctx)
}
