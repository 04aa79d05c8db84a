// Package tokenredirect is the redirect rule of the plugin's command-line
// clients (flant_gitops-patch, flant_gitops-sign). Each of their requests
// carries a Vault token (a header) or a CI id_token (a login body), which a
// redirect would hand to another place, and in clear once it leaves https.
package tokenredirect

import (
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strings"
)

// ErrRefused is a redirect refused: it would carry the token away.
var ErrRefused = errors.New("redirect refused")

// Check is an http.Client CheckRedirect: it follows a redirect only to the
// host and port of the first request, and never from https to anything
// else (Vault's own client refuses the downgrade too).
func Check(req *http.Request, via []*http.Request) error {
	first := via[0].URL
	switch {
	case len(via) >= 10:
		return fmt.Errorf("%w: stopped after 10 redirects", ErrRefused)
	case via[len(via)-1].URL.Scheme == "https" && req.URL.Scheme != "https", first.Scheme == "https" && req.URL.Scheme != "https":
		return fmt.Errorf("%w: %s redirects from https to %s://%s, which would send the Vault token or id_token in clear: set VAULT_ADDR to Vault's https address", ErrRefused, first.Host, req.URL.Scheme, req.URL.Host)
	case !sameHost(first, req.URL):
		return fmt.Errorf("%w: %s redirects to another host, %s, which would receive the Vault token or id_token: set VAULT_ADDR to the address that answers (the active node or its load balancer)", ErrRefused, first.Host, req.URL.Host)
	}
	return nil
}

// sameHost compares host and port, the port defaulted by the scheme and the
// host name case-insensitively.
func sameHost(a, b *url.URL) bool {
	port := func(u *url.URL) string {
		if p := u.Port(); p != "" {
			return p
		}
		if u.Scheme == "https" {
			return "443"
		}
		return "80"
	}
	return strings.EqualFold(a.Hostname(), b.Hostname()) && port(a) == port(b)
}
