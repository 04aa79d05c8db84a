package patch

import (
	"github.com/flant/flant_gitops/gitwatch"
)

// CheckAuth reports whether the credentials fit the repository URL (basic
// auth for HTTP(S), a parseable key with known_hosts for SSH), so that a
// misconfiguration is refused when written rather than at the first patch.
// The push uses the very same conversion as the mirror's fetch.
func CheckAuth(url string, a gitwatch.Auth) error {
	_, err := a.TransportAuth(url)
	return err
}
