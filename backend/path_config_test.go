package backend

import (
	"reflect"
	"strings"
	"testing"

	"github.com/hashicorp/vault/sdk/logical"
)

const (
	testDigest = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
	testImage  = "alpine@" + testDigest
	testCommit = "0123456789abcdef0123456789abcdef01234567"
)

func minimalConfig() map[string]any {
	return map[string]any{
		"git_repo_url": "https://git.example.com/infra/deploy.git",
		"docker_image": testImage,
		"commands":     []string{"sh /git/run.sh"},
	}
}

func TestConfigureDefaultsAndRead(t *testing.T) {
	b, s := newTestBackend(t, nil, nil)
	mustOK(t, configReq(t, b, s, logical.UpdateOperation, "configure", minimalConfig()), "write")

	resp := configReq(t, b, s, logical.ReadOperation, "configure", nil)
	want := map[string]any{
		"git_repo_url":    "https://git.example.com/infra/deploy.git",
		"git_branch_name": "main",
		"git_poll_period": int64(300),
		"required_number_of_verified_signatures_on_commit": 0,
		"initial_last_successful_commit":                   "",
		"docker_image":                                     testImage,
		"commands":                                         []string{"sh /git/run.sh"},
		"run_timeout":                                      int64(1800),
		"memory_limit":                                     "",
		"cpu_limit":                                        "",
		"network_mode":                                     "bridge",
	}
	if !reflect.DeepEqual(resp.Data, want) {
		t.Fatalf("read:\n got %#v\nwant %#v", resp.Data, want)
	}
}

func TestConfigurePartialUpdateKeepsOtherFields(t *testing.T) {
	b, s := newTestBackend(t, nil, nil)
	data := minimalConfig()
	data["memory_limit"] = "512m"
	data["cpu_limit"] = "1.50"
	data["initial_last_successful_commit"] = strings.ToUpper(testCommit)
	data["required_number_of_verified_signatures_on_commit"] = 0
	mustOK(t, configReq(t, b, s, logical.UpdateOperation, "configure", data), "create")
	mustOK(t, configReq(t, b, s, logical.UpdateOperation, "configure", map[string]any{
		"git_branch_name": "release/1.2",
		"git_poll_period": "1m",
		"network_mode":    "none",
	}), "update")

	cfg, err := getConfig(t.Context(), s)
	if err != nil || cfg == nil {
		t.Fatalf("getConfig: %v, %v", cfg, err)
	}
	if cfg.GitBranchName != "release/1.2" || cfg.GitPollPeriod.String() != "1m0s" || cfg.NetworkMode != "none" {
		t.Errorf("updated fields not applied: %+v", cfg)
	}
	if cfg.GitRepoURL != "https://git.example.com/infra/deploy.git" || cfg.DockerImage != testImage || len(cfg.Commands) != 1 {
		t.Errorf("fields not given in the update changed: %+v", cfg)
	}
	if cfg.MemoryLimitBytes != 512*1024*1024 || cfg.MemoryLimit != "512m" {
		t.Errorf("memory_limit = %q (%d bytes), want 512m (536870912)", cfg.MemoryLimit, cfg.MemoryLimitBytes)
	}
	if cfg.NanoCPUs != 1_500_000_000 || cfg.CPULimit != "1.5" {
		t.Errorf("cpu_limit = %q (%d nano), want 1.5 (1500000000)", cfg.CPULimit, cfg.NanoCPUs)
	}
	if cfg.InitialLastSuccessfulCommit != testCommit {
		t.Errorf("initial_last_successful_commit = %q, want lower-cased %q", cfg.InitialLastSuccessfulCommit, testCommit)
	}

	// Clearing optional limits.
	mustOK(t, configReq(t, b, s, logical.UpdateOperation, "configure", map[string]any{"memory_limit": "0", "cpu_limit": ""}), "clear limits")
	cfg, _ = getConfig(t.Context(), s)
	if cfg.MemoryLimitBytes != 0 || cfg.NanoCPUs != 0 || cfg.MemoryLimit != "" || cfg.CPULimit != "" {
		t.Errorf("limits not cleared: %+v", cfg)
	}
}

func TestConfigureAcceptsImageForms(t *testing.T) {
	for _, image := range []string{
		testDigest,
		"alpine@" + testDigest,
		"registry.example.com:5000/team/tool:1.2@" + testDigest,
	} {
		t.Run(image, func(t *testing.T) {
			b, s := newTestBackend(t, nil, nil)
			data := minimalConfig()
			data["docker_image"] = image
			mustOK(t, configReq(t, b, s, logical.UpdateOperation, "configure", data), "write")
		})
	}
}

func TestConfigureAcceptsURLForms(t *testing.T) {
	for _, u := range []string{
		"https://git.example.com/a/b.git",
		"http://127.0.0.1:8080/repo.git",
		"ssh://git@git.example.com:2222/a/b.git",
		"git@git.example.com:a/b.git",
	} {
		t.Run(u, func(t *testing.T) {
			b, s := newTestBackend(t, nil, nil)
			data := minimalConfig()
			data["git_repo_url"] = u
			mustOK(t, configReq(t, b, s, logical.UpdateOperation, "configure", data), "write")
		})
	}
}

func TestConfigureValidation(t *testing.T) {
	cases := []struct {
		name  string
		field string
		value any
		want  []string
	}{
		{"tagged image", "docker_image", "alpine:3.19", []string{"docker_image", "not pinned", "sha256"}},
		{"untagged image", "docker_image", "alpine", []string{"docker_image", "not pinned"}},
		{"short digest", "docker_image", "alpine@sha256:abcd", []string{"docker_image"}},
		{"short image id", "docker_image", "sha256:abcd", []string{"docker_image"}},
		{"empty image", "docker_image", "", []string{"docker_image", "empty"}},
		{"file url", "git_repo_url", "file:///srv/repo.git", []string{"git_repo_url", "https://", "ssh://"}},
		{"git url", "git_repo_url", "git://example.com/repo.git", []string{"git_repo_url", "scheme"}},
		{"bare path", "git_repo_url", "/srv/repo.git", []string{"git_repo_url"}},
		{"password in url", "git_repo_url", "https://u:secret@example.com/r.git", []string{"git_repo_url", "configure/git_credential"}},
		{"negative quorum", "required_number_of_verified_signatures_on_commit", -1, []string{"required_number_of_verified_signatures_on_commit", "-1"}},
		{"bad commit", "initial_last_successful_commit", "abc123", []string{"initial_last_successful_commit", "40 hex"}},
		{"empty commands", "commands", []string{" "}, []string{"commands", "at least one"}},
		{"bad branch", "git_branch_name", "feature..x", []string{"git_branch_name"}},
		{"refs branch", "git_branch_name", "refs/heads/main", []string{"git_branch_name", "refs/"}},
		{"bad memory", "memory_limit", "lots", []string{"memory_limit", "512m"}},
		{"tiny memory", "memory_limit", "1k", []string{"memory_limit", "minimum"}},
		{"bad cpu", "cpu_limit", "two", []string{"cpu_limit", "number"}},
		{"negative cpu", "cpu_limit", "-1", []string{"cpu_limit", "range"}},
		{"container network", "network_mode", "container:abc", []string{"network_mode", "bridge"}},
		{"bad network", "network_mode", "my net", []string{"network_mode"}},
		{"zero timeout", "run_timeout", "0s", []string{"run_timeout", "positive"}},
		{"zero poll", "git_poll_period", 0, []string{"git_poll_period", "positive"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			b, s := newTestBackend(t, nil, nil)
			data := minimalConfig()
			data[tc.field] = tc.value
			resp, err := rawConfigReq(b, s, logical.UpdateOperation, "configure", data)
			mustBadRequest(t, resp, err, tc.want...)
			if cfg, _ := getConfig(t.Context(), s); cfg != nil {
				t.Errorf("a refused write stored a configuration: %+v", cfg)
			}
		})
	}
}

func TestConfigureFirstWriteNeedsRequiredFields(t *testing.T) {
	b, s := newTestBackend(t, nil, nil)
	resp, err := rawConfigReq(b, s, logical.UpdateOperation, "configure", map[string]any{"git_branch_name": "main"})
	mustBadRequest(t, resp, err, "git_repo_url", "docker_image", "commands", "first write")
}

func TestConfigureQuorumWarning(t *testing.T) {
	b, s := newTestBackend(t, nil, nil)
	data := minimalConfig()
	data["required_number_of_verified_signatures_on_commit"] = 2
	resp := configReq(t, b, s, logical.UpdateOperation, "configure", data)
	mustOK(t, resp, "write")
	if resp == nil || len(resp.Warnings) != 1 || !strings.Contains(resp.Warnings[0], "only 0 usable trusted signer") {
		t.Fatalf("want a warning that the quorum of 2 cannot be met, got %#v", resp)
	}
	msg, err := quorumProblem(t.Context(), s)
	if err != nil || !strings.Contains(msg, "is 2 but only 0") {
		t.Fatalf("quorumProblem = %q, %v", msg, err)
	}
}

func TestConfigureDelete(t *testing.T) {
	b, s := newTestBackend(t, nil, nil)
	mustOK(t, configReq(t, b, s, logical.UpdateOperation, "configure", minimalConfig()), "write")
	mustOK(t, configReq(t, b, s, logical.DeleteOperation, "configure", nil), "delete")
	if resp := configReq(t, b, s, logical.ReadOperation, "configure", nil); resp != nil {
		t.Fatalf("read after delete = %#v, want nothing (404)", resp)
	}
}
