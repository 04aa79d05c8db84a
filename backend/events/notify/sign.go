package notify

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"fmt"
	"strconv"
	"strings"
	"time"
)

// SecretPrefix starts every secret, as the Standard Webhooks libraries
// expect it ("whsec_" + base64 of the key).
const SecretPrefix = "whsec_"

// Secret sizes the spec allows: 24 to 64 bytes of key. NewSecret makes 32.
const (
	minSecretBytes = 24
	maxSecretBytes = 64
	newSecretBytes = 32
)

// Headers of the spec.
const (
	HeaderID        = "webhook-id"
	HeaderTimestamp = "webhook-timestamp"
	HeaderSignature = "webhook-signature"
)

// NewSecret makes a signing secret in the spec's form.
func NewSecret() (string, error) {
	var b [newSecretBytes]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", fmt.Errorf("reading random bytes for a notification secret: %w", err)
	}
	return SecretPrefix + base64.StdEncoding.EncodeToString(b[:]), nil
}

// ParseSecret checks an operator's secret and returns its key bytes.
func ParseSecret(secret string) ([]byte, error) {
	rest, ok := strings.CutPrefix(secret, SecretPrefix)
	if !ok {
		return nil, fmt.Errorf("the secret must start with %q followed by the base64 of %d to %d random bytes (e.g. %s$(openssl rand -base64 32)), or be left out to have one made", SecretPrefix, minSecretBytes, maxSecretBytes, SecretPrefix)
	}
	key, err := base64.StdEncoding.DecodeString(rest)
	if err != nil {
		return nil, fmt.Errorf("the secret after %q is not standard base64: %v", SecretPrefix, err)
	}
	if len(key) < minSecretBytes || len(key) > maxSecretBytes {
		return nil, fmt.Errorf("the secret holds %d bytes of key; the spec asks for %d to %d", len(key), minSecretBytes, maxSecretBytes)
	}
	return key, nil
}

// Signature is one "v1,<base64>" entry of webhook-signature: the
// HMAC-SHA256, under key, of "id.timestamp.body".
func Signature(key []byte, id string, ts time.Time, body []byte) string {
	mac := hmac.New(sha256.New, key)
	mac.Write([]byte(id))
	mac.Write([]byte{'.'})
	mac.Write([]byte(strconv.FormatInt(ts.Unix(), 10)))
	mac.Write([]byte{'.'})
	mac.Write(body)
	return "v1," + base64.StdEncoding.EncodeToString(mac.Sum(nil))
}

// SignatureHeader is the webhook-signature value: one signature per key,
// space-separated (during a rotation the new and the previous secret both
// sign, so a receiver holding either verifies).
func SignatureHeader(keys [][]byte, id string, ts time.Time, body []byte) string {
	sigs := make([]string, 0, len(keys))
	for _, k := range keys {
		sigs = append(sigs, Signature(k, id, ts, body))
	}
	return strings.Join(sigs, " ")
}
