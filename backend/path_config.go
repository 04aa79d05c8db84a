package backend

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/hashicorp/vault/sdk/framework"
	"github.com/hashicorp/vault/sdk/logical"
)

const (
	defaultBranch      = "main"
	defaultPollPeriod  = 5 * time.Minute
	defaultRunTimeout  = 30 * time.Minute
	defaultNetworkMode = "bridge"
)

func pathConfigure(b *backend) []*framework.Path {
	return []*framework.Path{{
		Pattern: "configure$",
		DisplayAttrs: &framework.DisplayAttributes{
			OperationPrefix: "flant-gitops",
			OperationSuffix: "configuration",
		},
		Fields: map[string]*framework.FieldSchema{
			"git_repo_url": {
				Type:        framework.TypeString,
				Description: "Git repository to watch: https://, http:// or ssh:// URL (or git's user@host:path form). Credentials go to configure/git_credential, never into the URL. Required on first write.",
			},
			"git_branch_name": {
				Type:        framework.TypeString,
				Default:     defaultBranch,
				Description: "Branch to watch for new commits, without refs/heads/. Default main.",
			},
			"git_poll_period": {
				Type:        framework.TypeDurationSecond,
				Default:     int(defaultPollPeriod.Seconds()),
				Description: "How often to fetch the branch, e.g. 5m (the default). Vault ticks about once a minute, so shorter periods poll about every minute.",
			},
			"required_number_of_verified_signatures_on_commit": {
				Type:        framework.TypeInt,
				Default:     0,
				Description: "How many distinct trusted PGP keys (configure/trusted_pgp_public_key) must have signed a new commit before it runs; 0 (the default) disables the check. Signatures in the commit and in trdl-style git notes count.",
			},
			"initial_last_successful_commit": {
				Type:        framework.TypeString,
				Description: "Full 40-hex commit SHA treated as already run before the first poll; new commits must descend from it. Empty: the first commit seen is run.",
			},
			"docker_image": {
				Type:        framework.TypeString,
				Description: "Image the commands run in, pinned: name@sha256:<64 hex> or a local image ID sha256:<64 hex>. Tags are refused because they can move. Required on first write.",
			},
			"commands": {
				Type:        framework.TypeStringSlice,
				Description: "Shell commands run in order with `sh -c` inside the container, with the commit's files at /git; the run fails at the first non-zero exit. Repeat commands= on the CLI for several. Required on first write.",
			},
			"run_timeout": {
				Type:        framework.TypeDurationSecond,
				Default:     int(defaultRunTimeout.Seconds()),
				Description: "Longest a run may take, e.g. 30m (the default); the container is stopped and the run fails after it.",
			},
			"memory_limit": {
				Type:        framework.TypeString,
				Description: "Memory limit of the container in Docker syntax, e.g. 512m or 2g (at least 6m); empty or 0 for no limit.",
			},
			"cpu_limit": {
				Type:        framework.TypeString,
				Description: "CPU limit of the container as a number of CPUs, e.g. 1.5; empty or 0 for no limit.",
			},
			"network_mode": {
				Type:        framework.TypeString,
				Default:     defaultNetworkMode,
				Description: "Docker network of the container: bridge (the default), host, none or the name of an existing Docker network.",
			},
		},
		ExistenceCheck: b.configExists,
		Operations: map[logical.Operation]framework.OperationHandler{
			logical.ReadOperation: &framework.PathOperation{
				Callback:  b.pathConfigRead,
				Responses: okWith(configResponseFields()),
				Summary:   "Read the main configuration.",
			},
			logical.CreateOperation: &framework.PathOperation{
				Callback:                    b.pathConfigWrite,
				Responses:                   noContent(),
				Summary:                     "Configure the repository, branch, quorum, image and commands.",
				ForwardPerformanceStandby:   true,
				ForwardPerformanceSecondary: true,
			},
			logical.UpdateOperation: &framework.PathOperation{
				Callback:                    b.pathConfigWrite,
				Responses:                   noContent(),
				Summary:                     "Change some fields of the configuration; fields not given keep their values.",
				ForwardPerformanceStandby:   true,
				ForwardPerformanceSecondary: true,
			},
			logical.DeleteOperation: &framework.PathOperation{
				Callback:                    b.pathConfigDelete,
				Responses:                   noContent(),
				Summary:                     "Delete the main configuration; polling stops.",
				ForwardPerformanceStandby:   true,
				ForwardPerformanceSecondary: true,
			},
		},
		HelpSynopsis:    pathConfigureHelpSyn,
		HelpDescription: pathConfigureHelpDesc,
	}}
}

func (b *backend) configExists(ctx context.Context, req *logical.Request, _ *framework.FieldData) (bool, error) {
	cfg, err := getConfig(ctx, req.Storage)
	return cfg != nil, err
}

func (b *backend) pathConfigRead(ctx context.Context, req *logical.Request, _ *framework.FieldData) (*logical.Response, error) {
	cfg, err := getConfig(ctx, req.Storage)
	if err != nil || cfg == nil {
		return nil, err
	}
	resp := &logical.Response{Data: configResponse(cfg)}
	if msg, err := quorumProblem(ctx, req.Storage); err != nil {
		return nil, err
	} else if msg != "" {
		resp.AddWarning(msg)
	}
	return resp, nil
}

// configResponse is the allow-list of what a read shows.
func configResponse(cfg *configEntry) map[string]any {
	return map[string]any{
		"git_repo_url":    cfg.GitRepoURL,
		"git_branch_name": cfg.GitBranchName,
		"git_poll_period": int64(cfg.GitPollPeriod.Seconds()),
		"required_number_of_verified_signatures_on_commit": cfg.RequiredSignatures,
		"initial_last_successful_commit":                   cfg.InitialLastSuccessfulCommit,
		"docker_image":                                     cfg.DockerImage,
		"commands":                                         cfg.Commands,
		"run_timeout":                                      int64(cfg.RunTimeout.Seconds()),
		"memory_limit":                                     cfg.MemoryLimit,
		"cpu_limit":                                        cfg.CPULimit,
		"network_mode":                                     cfg.NetworkMode,
	}
}

func (b *backend) pathConfigWrite(ctx context.Context, req *logical.Request, d *framework.FieldData) (*logical.Response, error) {
	b.configMu.Lock()
	defer b.configMu.Unlock()

	cfg, err := getConfig(ctx, req.Storage)
	if err != nil {
		return nil, err
	}
	creating := cfg == nil
	if creating {
		cfg = &configEntry{
			GitBranchName: defaultBranch,
			GitPollPeriod: defaultPollPeriod,
			RunTimeout:    defaultRunTimeout,
			NetworkMode:   defaultNetworkMode,
		}
	}
	previousRepoURL := cfg.GitRepoURL
	if err := applyConfigFields(cfg, d); err != nil {
		return respondErr(err)
	}
	cred, err := getGitCredential(ctx, req.Storage)
	if err != nil {
		return nil, err
	}
	if cred != nil {
		if bound := gitCredentialBoundURL(cred, previousRepoURL); bound != "" && bound != cfg.GitRepoURL {
			return respondErr(secretMustFollow([]string{"git_repo_url"}, "configure/git_credential",
				fmt.Sprintf("it was written for %s; delete it (vault delete %sconfigure/git_credential), change git_repo_url, then write the credential for the new URL", bound, req.MountPoint)))
		}
	}
	if creating {
		var missing []string
		if cfg.GitRepoURL == "" {
			missing = append(missing, "git_repo_url")
		}
		if cfg.DockerImage == "" {
			missing = append(missing, "docker_image")
		}
		if len(cfg.Commands) == 0 {
			missing = append(missing, "commands")
		}
		if len(missing) > 0 {
			return respondErr(invalidf("missing %s: the first write of configure must give git_repo_url, docker_image and commands (see `vault path-help %sconfigure`)", strings.Join(missing, ", "), req.MountPoint))
		}
	}
	defer b.hooks.invalidate() // after the write: a delivery meanwhile may cache the old branch
	if err := putEntry(ctx, req.Storage, storageKeyConfig, cfg); err != nil {
		return nil, err
	}
	if cred != nil && cred.GitRepoURL == "" && cfg.GitRepoURL != "" {
		// A credential written before configure (or before credentials
		// recorded their URL) is bound now to the URL it is first used for.
		cred.GitRepoURL = cfg.GitRepoURL
		if err := putEntry(ctx, req.Storage, storageKeyGitCredential, cred); err != nil {
			return nil, err
		}
	}
	msg, err := quorumProblem(ctx, req.Storage)
	if err != nil || msg == "" {
		return nil, err
	}
	resp := &logical.Response{}
	resp.AddWarning(msg)
	return resp, nil
}

// applyConfigFields copies the fields present in the request into cfg,
// validating each; fields not given are left as they are.
func applyConfigFields(cfg *configEntry, d *framework.FieldData) error {
	if v, ok := d.GetOk("git_repo_url"); ok {
		s, err := validateGitRepoURL(watchGitFields, v.(string))
		if err != nil {
			return err
		}
		cfg.GitRepoURL = s
	}
	if v, ok := d.GetOk("git_branch_name"); ok {
		s, err := validateBranchName(watchGitFields, v.(string))
		if err != nil {
			return err
		}
		cfg.GitBranchName = s
	}
	if err := positiveDuration(d, "git_poll_period", "5m", &cfg.GitPollPeriod); err != nil {
		return err
	}
	if v, ok := d.GetOk("required_number_of_verified_signatures_on_commit"); ok {
		n := v.(int)
		if n < 0 {
			return invalidf("required_number_of_verified_signatures_on_commit is %d: give 0 (no signature check) or the number of distinct trusted keys that must sign each commit", n)
		}
		cfg.RequiredSignatures = n
	}
	if v, ok := d.GetOk("initial_last_successful_commit"); ok {
		s, err := validateCommit(v.(string))
		if err != nil {
			return err
		}
		cfg.InitialLastSuccessfulCommit = s
	}
	if v, ok := d.GetOk("docker_image"); ok {
		s, err := validateDockerImage(v.(string))
		if err != nil {
			return err
		}
		cfg.DockerImage = s
	}
	if v, ok := d.GetOk("commands"); ok {
		// The framework would turn a number or a bool into a one-command list.
		if err := checkStringList("commands", d.Raw["commands"]); err != nil {
			return err
		}
		cmds, err := validateCommands(v.([]string))
		if err != nil {
			return err
		}
		cfg.Commands = cmds
	}
	if err := positiveDuration(d, "run_timeout", "30m", &cfg.RunTimeout); err != nil {
		return err
	}
	if v, ok := d.GetOk("memory_limit"); ok {
		text, n, err := parseMemoryLimit(v.(string))
		if err != nil {
			return err
		}
		cfg.MemoryLimit, cfg.MemoryLimitBytes = text, n
	}
	if v, ok := d.GetOk("cpu_limit"); ok {
		text, n, err := parseCPULimit(v.(string))
		if err != nil {
			return err
		}
		cfg.CPULimit, cfg.NanoCPUs = text, n
	}
	if v, ok := d.GetOk("network_mode"); ok {
		s, err := validateNetworkMode(v.(string))
		if err != nil {
			return err
		}
		cfg.NetworkMode = s
	}
	return nil
}

// positiveDuration sets *dst from a duration field when it is given; zero
// and negative durations are refused with an example of a good one.
func positiveDuration(d *framework.FieldData, field, example string, dst *time.Duration) error {
	v, ok := d.GetOk(field)
	if !ok {
		return nil
	}
	dur := time.Duration(v.(int)) * time.Second
	if dur < time.Second {
		return invalidf("%s must be positive: give a duration such as %s", field, example)
	}
	*dst = dur
	return nil
}

func (b *backend) pathConfigDelete(ctx context.Context, req *logical.Request, _ *framework.FieldData) (*logical.Response, error) {
	b.configMu.Lock()
	defer b.configMu.Unlock()
	defer b.hooks.invalidate()
	return nil, deleteEntry(ctx, req.Storage, storageKeyConfig)
}

const pathConfigureHelpSyn = `Configure the repository to watch and the commands to run on each new commit.`

const pathConfigureHelpDesc = `
The main configuration. Once written, the plugin polls git_branch_name of
git_repo_url every git_poll_period. A new commit that descends from the last
successful one and carries at least
required_number_of_verified_signatures_on_commit signatures from distinct
trusted keys (configure/trusted_pgp_public_key) is checked out at /git of a
container made from docker_image, where commands run in order, limited by
run_timeout, memory_limit, cpu_limit and network_mode.

The first write needs git_repo_url, docker_image and commands; later writes
change only the fields they give. Reads never show credentials: those live in
configure/git_credential, which cannot be read. The credential is bound to the
git_repo_url it was written for: while it is stored, a write of another
git_repo_url is refused (delete the credential, change the URL, write the
credential again), so it never goes to another host.

Example:

  vault write flant_gitops/configure \
      git_repo_url=https://gitlab.example.com/infra/deploy.git \
      git_branch_name=main \
      required_number_of_verified_signatures_on_commit=2 \
      docker_image=alpine@sha256:<64 hex> \
      commands="sh /git/deploy.sh"
`
