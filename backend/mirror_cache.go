package backend

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"

	"github.com/hashicorp/go-hclog"

	"github.com/flant/flant_gitops/gitwatch"
)

// The watch and patch halves keep their git mirrors in one layout:
// <cache base>/<mount id>/<kind>/<folder>, where the folder is named by the
// remote and branch only, so a rotated password reuses the clone.
const (
	mirrorKindWatch = "watch"
	mirrorKindPatch = "patch"
)

// identityHash fingerprints the parts that decide what is talked to and as
// whom. Secrets go in only hashed; each part is length-prefixed so that no
// two different lists give the same input.
func identityHash(parts ...string) string {
	h := sha256.New()
	for _, p := range parts {
		fmt.Fprintf(h, "%d:%s;", len(p), p)
	}
	return hex.EncodeToString(h.Sum(nil))
}

// mirrorTarget is the remote a mirror follows and the credentials it uses.
type mirrorTarget struct {
	URL, Branch string
	Auth        gitwatch.Auth
}

// folder names the target's cache folder.
func (t mirrorTarget) folder() string { return identityHash(t.URL, t.Branch)[:16] }

// fingerprint changes whenever the remote or its credentials change: an
// open mirror with another fingerprint is reopened.
func (t mirrorTarget) fingerprint() string {
	a := t.Auth
	return identityHash(t.URL, t.Branch, a.Username, a.Password, string(a.SSHPrivateKey), string(a.SSHKnownHosts))
}

// mirrorFolder returns the folder of t's mirror, making the mount's and the
// kind's folders private (see privateCacheDir) first. Every other folder of
// the kind whose name keep does not claim is stale and removed, with a log
// line; so are folders of the previous layout. keep may be nil.
func mirrorFolder(logger hclog.Logger, base, mountID, kind string, t mirrorTarget, keep func(folder string) bool) (string, error) {
	mountDir, err := privateCacheDir(logger, base, mountID)
	if err != nil {
		return "", err
	}
	kindDir, err := privateCacheDir(logger, mountDir, kind)
	if err != nil {
		return "", err
	}
	removeOldLayout(logger, base, mountID)
	name := t.folder()
	removeStaleMirrors(logger, kindDir, func(f string) bool { return f == name || (keep != nil && keep(f)) })
	return filepath.Join(kindDir, name), nil
}

// removeStaleMirrors deletes the folders in kindDir that keep does not claim.
func removeStaleMirrors(logger hclog.Logger, kindDir string, keep func(folder string) bool) {
	entries, err := os.ReadDir(kindDir)
	if err != nil {
		return
	}
	for _, e := range entries {
		if !keep(e.Name()) {
			removeMirror(logger, filepath.Join(kindDir, e.Name()))
		}
	}
}

// removeOldLayout drops what earlier versions cached: watch mirrors straight
// under <base>/<mount id> and patch mirrors under <base>/patch-<mount id>. A
// cache is disposable; this only frees the space.
func removeOldLayout(logger hclog.Logger, base, mountID string) {
	mountDir := filepath.Join(base, mountID)
	if entries, err := os.ReadDir(mountDir); err == nil {
		for _, e := range entries {
			if e.Name() != mirrorKindWatch && e.Name() != mirrorKindPatch {
				removeMirror(logger, filepath.Join(mountDir, e.Name()))
			}
		}
	}
	if _, err := os.Lstat(filepath.Join(base, "patch-"+mountID)); err == nil {
		removeMirror(logger, filepath.Join(base, "patch-"+mountID))
	}
}

func removeMirror(logger hclog.Logger, dir string) {
	if err := os.RemoveAll(dir); err != nil {
		logger.Warn("could not remove an old mirror cache", "path", dir, "error", err)
		return
	}
	logger.Info("removed a mirror cache no longer configured", "path", dir)
}
