package backend

import (
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/vault/api"

	"github.com/flant/flant_gitops/backend/vaulttest"
	"github.com/flant/flant_gitops/gitwatch/pgptest"
)

// TestE2ENewerStorageFormatIsRefused: a mount whose storage a newer version
// marked with a format this build cannot read (written here through
// sys/raw, as that version would leave it after a downgrade) is refused on
// every request with a message naming that version, through a real Vault;
// the marker and the entries stay as they are, and once the storage is in a
// format this build reads again the mount serves them unchanged.
func TestE2ENewerStorageFormatIsRefused(t *testing.T) {
	srv := vaulttest.NewServer(t, &vaulttest.Options{Config: "raw_storage_endpoint = true\n"})
	c := srv.Client
	key := pgptest.NewKey(t, "alice")
	if _, err := c.Logical().Write(vaulttest.MountPath+"/configure/trusted_pgp_public_key/alice", map[string]any{"public_key": key.PublicArmored(t)}); err != nil {
		t.Fatal(err)
	}
	st, err := c.Logical().Read(vaulttest.MountPath + "/status")
	if err != nil {
		t.Fatal(err)
	}
	if st.Data["version"] != vaulttest.PluginVersion || fmt.Sprint(st.Data["storage_format"]) != "1" {
		t.Fatalf("status version %v, storage_format %v; want %s and 1", st.Data["version"], st.Data["storage_format"], vaulttest.PluginVersion)
	}
	m, err := c.Sys().GetMount(vaulttest.MountPath)
	if err != nil {
		t.Fatal(err)
	}
	raw := "sys/raw/logical/" + m.UUID + "/"
	readRaw := func(key string) string {
		t.Helper()
		s, err := c.Logical().Read(raw + key)
		if err != nil || s == nil {
			t.Fatalf("read %s%s: %v", raw, key, err)
		}
		return strings.TrimSpace(s.Data["value"].(string))
	}
	if got, want := readRaw(storageKeyFormat), `{"format":1,"written_by":"`+vaulttest.PluginVersion+`"}`; got != want {
		t.Fatalf("marker %s, want %s", got, want)
	}
	keyEntry := readRaw(storagePrefixTrustedKey + "alice")

	const newer = `{"format":3,"written_by":"v9.9.9"}`
	if _, err := c.Logical().Write(raw+storageKeyFormat, map[string]any{"value": newer}); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Sys().ReloadPlugin(&api.ReloadPluginInput{Plugin: vaulttest.PluginName}); err != nil {
		t.Fatal(err)
	}
	want := "stored by flant_gitops v9.9.9 in format 3; this is " + vaulttest.PluginVersion + ", which reads up to format 2: upgrade the plugin again"
	deadline := time.Now().Add(time.Minute)
	for {
		_, err := c.Logical().Read(vaulttest.MountPath + "/status")
		if err != nil && strings.Contains(err.Error(), want) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("status after the reload answered %v, want the refusal %q", err, want)
		}
		time.Sleep(200 * time.Millisecond)
	}
	for _, req := range []struct {
		op   string
		path string
	}{
		{"read", "configure/trusted_pgp_public_key/alice"},
		{"write", "configure/trusted_pgp_public_key/bob"},
		{"write", "poll"},
	} {
		var err error
		if req.op == "read" {
			_, err = c.Logical().Read(vaulttest.MountPath + "/" + req.path)
		} else {
			_, err = c.Logical().Write(vaulttest.MountPath+"/"+req.path, map[string]any{"public_key": key.PublicArmored(t)})
		}
		var re *api.ResponseError
		if !errors.As(err, &re) || re.StatusCode != 503 || !strings.Contains(err.Error(), want) {
			t.Errorf("%s %s answered %v, want 503 with %q", req.op, req.path, err, want)
		}
	}
	if got := readRaw(storageKeyFormat); got != newer {
		t.Errorf("the refusing version rewrote the marker to %s", got)
	}
	if got := readRaw(storagePrefixTrustedKey + "alice"); got != keyEntry {
		t.Errorf("the trusted key entry changed under the refusal:\n%s\nwant\n%s", got, keyEntry)
	}
	if s, _ := c.Logical().Read(raw + storagePrefixTrustedKey + "bob"); s != nil {
		t.Errorf("a refused write was stored: %v", s.Data)
	}
	if !strings.Contains(srv.Log(), "refusing to serve this mount") {
		t.Errorf("the server log does not say why the mount is refused")
	}

	// The version that reads it is back (here: the marker of a format this
	// build reads): everything is served as it was.
	if _, err := c.Logical().Write(raw+storageKeyFormat, map[string]any{"value": `{"format":1,"written_by":"v9.9.9"}`}); err != nil {
		t.Fatal(err)
	}
	srv.ReloadPlugin(t)
	s, err := c.Logical().Read(vaulttest.MountPath + "/configure/trusted_pgp_public_key/alice")
	if err != nil || s == nil || s.Data["fingerprint"] != key.Fingerprint() {
		t.Fatalf("trusted key after the refusal was lifted: %v, %v; want fingerprint %s", s, err, key.Fingerprint())
	}
}
