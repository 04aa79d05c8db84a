package backend

import (
	"strings"
	"testing"

	"github.com/flant/flant_gitops/container"
)

// The backend accepts at configure exactly what the runner accepts at each
// run, so no configuration passes here and then fails every run.
func TestImageAndNetworkRulesAreTheRunners(t *testing.T) {
	digest := "sha256:" + strings.Repeat("a", 64)
	images := []struct {
		image string
		ok    bool
		msg   string
	}{
		{"busybox@" + digest, true, ""},
		{"registry.example.com:5000/team/app:1.2@" + digest, true, ""},
		{digest, true, ""},
		{"busybox:latest", false, "is not pinned"},
		{"busybox@sha512:" + strings.Repeat("a", 128), false, "uses digest"},
		{"Registry.example.com/app@" + digest, false, "is not accepted by the runner"},
		{"a..b@" + digest, false, "is not an image reference"},
	}
	for _, tc := range images {
		_, err := validateDockerImage(tc.image)
		if (err == nil) != tc.ok || (err != nil && !strings.Contains(err.Error(), tc.msg)) {
			t.Errorf("validateDockerImage(%q) = %v, want ok=%v %q", tc.image, err, tc.ok, tc.msg)
		}
		if err == nil && container.CheckPinned(tc.image) != nil {
			t.Errorf("docker_image %q accepted but the runner refuses it", tc.image)
		}
	}
	networks := []struct {
		mode string
		ok   bool
	}{
		{"bridge", true}, {"host", true}, {"none", true}, {"my-net_1.x", true},
		{"container:abc", false}, {"-net", false}, {"a b", false},
	}
	for _, tc := range networks {
		_, err := validateNetworkMode(tc.mode)
		if (err == nil) != tc.ok {
			t.Errorf("validateNetworkMode(%q) = %v, want ok=%v", tc.mode, err, tc.ok)
		}
		if (err == nil) != (container.CheckNetworkMode(tc.mode) == nil) {
			t.Errorf("network_mode %q: backend and runner disagree", tc.mode)
		}
	}
}
