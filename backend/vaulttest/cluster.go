package vaulttest

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/hashicorp/vault/api"
)

const (
	// clusterTimeout bounds each wait of the cluster harness (a node
	// answering, unsealing, joining, an election). Generous: on a loaded
	// 2-core machine a Vault start alone can take ten seconds.
	clusterTimeout = 2 * time.Minute
	// clusterPoll is how often the harness looks again while it waits.
	clusterPoll = 100 * time.Millisecond
)

// ClusterOptions change how a cluster is started. The zero value starts three
// nodes with the plugin registered and enabled.
type ClusterOptions struct {
	// Nodes is the number of Vault servers (default 3).
	Nodes int
	// NoPlugin starts the cluster without building, registering or
	// enabling the plugin.
	NoPlugin bool
	// Env is added to the environment of every node; plugin processes
	// inherit their Vault's environment, so it reaches the plugin too.
	Env []string
	// NodeEnv[i] is added after Env to the environment of node i only (and
	// so of the plugin that node runs while it is active), e.g. a
	// different DOCKER_HOST per node.
	NodeEnv [][]string
	// LogLevel of every server; default "debug", as for Server.
	LogLevel string
	// PerformanceMultiplier scales Raft's timing (1 is the fastest: about a
	// second to notice a dead leader); default 1.
	PerformanceMultiplier int
}

// Cluster is a Vault cluster on integrated (Raft) storage, started the way an
// operator would start one: a config file per node with retry_join to the
// others, `init` on the first node with one key share, unseal, and the other
// nodes unsealed so that they join. The plugin is registered by sha256 and
// enabled once, through the active node. The harness is driven from the
// test's goroutine; it is not safe for concurrent use.
type Cluster struct {
	// Nodes in start order: Nodes[0] is the one that was initialized.
	Nodes []*Node
	// Token is the root token; UnsealKey the only key share.
	Token     string
	UnsealKey string
	// PluginSHA256 is the hex sha256 of the registered plugin (empty with
	// ClusterOptions.NoPlugin).
	PluginSHA256 string
	// VaultBinary is the vault executable in use.
	VaultBinary string

	pluginDir string
	level     string
}

// Node is one Vault server of a Cluster. Its embedded Server gives the
// node's address, root-token Client, log, CLI and Pid; they stay valid across
// Kill9 and Restart (same address and log file).
type Node struct {
	*Server
	// ID is the node's raft node_id (node1, node2, ...).
	ID string
	// ClusterAddr is where the other nodes reach it (https://127.0.0.1:PORT).
	ClusterAddr string

	cluster    *Cluster
	configPath string
	env        []string
	running    bool
	// groups are the process groups this node ever started; a Vault killed
	// with Kill9 leaves its plugin processes behind in its group.
	groups []int
}

// NewCluster starts a cluster, waits until every node is unsealed, the Raft
// configuration lists every node as a voter and autopilot calls the cluster
// healthy, then (unless opts.NoPlugin) registers and enables the plugin.
// Everything is stopped by t.Cleanup; a failed test gets the tail of every
// node's log.
func NewCluster(t testing.TB, opts *ClusterOptions) *Cluster {
	t.Helper()
	if opts == nil {
		opts = &ClusterOptions{}
	}
	n := opts.Nodes
	if n == 0 {
		n = 3
	}
	if n < 1 || len(opts.NodeEnv) > n {
		t.Fatalf("vaulttest: a cluster of %d nodes with environments for %d", n, len(opts.NodeEnv))
	}
	c := &Cluster{VaultBinary: VaultBinary(t), level: opts.LogLevel}
	if c.level == "" {
		c.level = "debug"
	}
	if !opts.NoPlugin {
		c.pluginDir, c.PluginSHA256 = buildPlugin(t, RepoRoot(t))
	} else {
		// plugin_directory must exist; an empty one registers nothing.
		c.pluginDir = t.TempDir()
	}
	start := time.Now()
	if err := c.create(t, n, opts); err != nil {
		t.Fatalf("vaulttest: %v", err)
	}
	// Registered after the nodes' temporary directories, so it runs
	// before they are removed.
	t.Cleanup(func() { c.stop(t) })
	for _, node := range c.Nodes {
		if err := node.start("started"); err != nil {
			t.Fatalf("vaulttest: %v", err)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), clusterTimeout)
	defer cancel()
	if err := c.bootstrap(ctx); err != nil {
		t.Fatalf("vaulttest: cluster did not form: %v\n%s", err, c.logTails(30))
	}
	if !opts.NoPlugin {
		leader := c.Leader(t)
		leader.PluginSHA256 = c.PluginSHA256
		leader.enablePlugin(t, nil)
	}
	t.Logf("vaulttest: %d-node raft cluster ready in %s (active: %s)", n, time.Since(start).Round(time.Millisecond), c.Leader(t).ID)
	return c
}

// create writes each node's configuration. The ports are all taken first,
// since each config names the others.
func (c *Cluster) create(t testing.TB, n int, opts *ClusterOptions) error {
	type ports struct{ api, cluster int }
	free, err := freePorts(2 * n)
	if err != nil {
		return err
	}
	ps := make([]ports, n)
	for i := range ps {
		ps[i] = ports{api: free[2*i], cluster: free[2*i+1]}
	}
	mult := opts.PerformanceMultiplier
	if mult == 0 {
		mult = 1
	}
	for i := range n {
		dir := t.TempDir()
		raftDir := filepath.Join(dir, "raft")
		if err := os.Mkdir(raftDir, 0o700); err != nil {
			return fmt.Errorf("create raft dir: %w", err)
		}
		node := &Node{
			ID:          fmt.Sprintf("node%d", i+1),
			ClusterAddr: fmt.Sprintf("https://127.0.0.1:%d", ps[i].cluster),
			cluster:     c,
			configPath:  filepath.Join(dir, "vault.hcl"),
			env:         append(append(serverEnviron(), opts.Env...), nodeEnv(opts.NodeEnv, i)...),
			Server: &Server{
				Addr:        fmt.Sprintf("http://127.0.0.1:%d", ps[i].api),
				LogPath:     filepath.Join(dir, "vault.log"),
				VaultBinary: c.VaultBinary,
			},
		}
		var joins strings.Builder
		for j := range n {
			if j != i {
				fmt.Fprintf(&joins, "  retry_join {\n    leader_api_addr = %q\n  }\n", fmt.Sprintf("http://127.0.0.1:%d", ps[j].api))
			}
		}
		// Autopilot adds a joining node as a non-voter and promotes it
		// once it has been stable; short intervals make that seconds.
		cfg := fmt.Sprintf(`disable_mlock = true
api_addr = %q
cluster_addr = %q
plugin_directory = %q

storage "raft" {
  path = %q
  node_id = %q
  performance_multiplier = %d
  autopilot_reconcile_interval = "1s"
  autopilot_update_interval = "500ms"
%s}

listener "tcp" {
  address = %q
  cluster_address = %q
  tls_disable = true
}
`, node.Addr, node.ClusterAddr, c.pluginDir, raftDir, node.ID, mult, joins.String(),
			fmt.Sprintf("127.0.0.1:%d", ps[i].api), fmt.Sprintf("127.0.0.1:%d", ps[i].cluster))
		if err := os.WriteFile(node.configPath, []byte(cfg), 0o600); err != nil {
			return fmt.Errorf("write %s: %w", node.configPath, err)
		}
		client, err := node.newClient()
		if err != nil {
			return err
		}
		node.Client = client
		c.Nodes = append(c.Nodes, node)
	}
	return nil
}

// freePorts finds n distinct free loopback ports, holding each until all are
// found so that none is handed out twice.
func freePorts(n int) ([]int, error) {
	ports := make([]int, 0, n)
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, fmt.Errorf("find a free port: %w", err)
		}
		defer l.Close()
		ports = append(ports, l.Addr().(*net.TCPAddr).Port)
	}
	return ports, nil
}

func nodeEnv(envs [][]string, i int) []string {
	if i < len(envs) {
		return envs[i]
	}
	return nil
}

// bootstrap initializes the first node, unseals it, tunes autopilot, unseals
// the others so they join through retry_join, and waits for a healthy
// cluster of voters.
func (c *Cluster) bootstrap(ctx context.Context) error {
	first := c.Nodes[0]
	if err := first.waitAnswering(ctx); err != nil {
		return err
	}
	init, err := first.Client.Sys().InitWithContext(ctx, &api.InitRequest{SecretShares: 1, SecretThreshold: 1})
	if err != nil {
		return fmt.Errorf("init %s: %w", first.ID, err)
	}
	if len(init.KeysB64) != 1 || init.RootToken == "" {
		return fmt.Errorf("init %s answered %d keys and root token %t", first.ID, len(init.KeysB64), init.RootToken != "")
	}
	c.Token, c.UnsealKey = init.RootToken, init.KeysB64[0]
	for _, node := range c.Nodes {
		node.Token = c.Token
		node.Client.SetToken(c.Token)
	}
	if err := first.unseal(ctx); err != nil {
		return err
	}
	if _, err := c.waitActive(ctx, nil); err != nil {
		return err
	}
	// A joining node becomes a voter after server_stabilization_time
	// (10s by default); dead servers stay in the configuration, so a
	// killed node can come back.
	// Written raw: the api client's struct sends every field, and Vault
	// without Enterprise refuses disable_upgrade_migration even when false.
	_, err = first.Client.Logical().WriteWithContext(ctx, "sys/storage/raft/autopilot/configuration", map[string]any{
		"server_stabilization_time": "1s",
	})
	if err != nil {
		return fmt.Errorf("tune autopilot on %s: %w", first.ID, err)
	}
	for _, node := range c.Nodes[1:] {
		if err := node.waitAnswering(ctx); err != nil {
			return err
		}
		if err := node.unseal(ctx); err != nil {
			return err
		}
	}
	return c.waitHealthy(ctx)
}

// waitHealthy waits until every running node is unsealed, the Raft
// configuration lists every node as a voter, and autopilot reports the
// cluster healthy.
func (c *Cluster) waitHealthy(ctx context.Context) error {
	leader, err := c.waitActive(ctx, nil)
	if err != nil {
		return err
	}
	var last string
	for {
		last = c.healthProblem(ctx, leader)
		if last == "" {
			return nil
		}
		if err := sleepCtx(ctx, clusterPoll); err != nil {
			return fmt.Errorf("the cluster did not become healthy within %s: %s", clusterTimeout, last)
		}
		// The active node may have changed meanwhile.
		if l, err := c.activeNode(ctx); err == nil && l != nil {
			leader = l
		}
	}
}

// healthProblem returns what keeps the cluster from being healthy, or "".
func (c *Cluster) healthProblem(ctx context.Context, leader *Node) string {
	for _, node := range c.Nodes {
		if !node.running {
			continue
		}
		h, err := node.health(ctx)
		if err != nil {
			return fmt.Sprintf("%s: %v", node.ID, err)
		}
		if h.Sealed || !h.Initialized {
			return fmt.Sprintf("%s is sealed or not initialized", node.ID)
		}
	}
	s, err := leader.Client.Logical().ReadWithContext(ctx, "sys/storage/raft/configuration")
	if err != nil || s == nil {
		return fmt.Sprintf("read raft configuration on %s: %v", leader.ID, err)
	}
	cfg, _ := s.Data["config"].(map[string]any)
	servers, _ := cfg["servers"].([]any)
	voters := map[string]bool{}
	for _, v := range servers {
		if srv, _ := v.(map[string]any); srv != nil && srv["voter"] == true {
			voters[fmt.Sprint(srv["node_id"])] = true
		}
	}
	for _, node := range c.Nodes {
		if !voters[node.ID] {
			return fmt.Sprintf("raft configuration has no voter %s: %v", node.ID, servers)
		}
	}
	ap, err := leader.Client.Sys().RaftAutopilotStateWithContext(ctx)
	if err != nil || ap == nil {
		return fmt.Sprintf("read autopilot state on %s: %v", leader.ID, err)
	}
	if !ap.Healthy {
		return fmt.Sprintf("autopilot: not healthy: %s", ap)
	}
	return ""
}

// Leader waits for the one active node and returns it.
func (c *Cluster) Leader(t testing.TB) *Node {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), clusterTimeout)
	defer cancel()
	n, err := c.waitActive(ctx, nil)
	if err != nil {
		t.Fatalf("vaulttest: %v\n%s", err, c.logTails(30))
	}
	return n
}

// Standbys waits until every running node other than the active one is an
// unsealed standby and returns them.
func (c *Cluster) Standbys(t testing.TB) []*Node {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), clusterTimeout)
	defer cancel()
	for {
		leader, err := c.waitActive(ctx, nil)
		if err != nil {
			t.Fatalf("vaulttest: %v\n%s", err, c.logTails(30))
		}
		var standbys []*Node
		problem := ""
		for _, node := range c.Nodes {
			if node == leader || !node.running {
				continue
			}
			h, err := node.health(ctx)
			switch {
			case err != nil:
				problem = fmt.Sprintf("%s: %v", node.ID, err)
			case h.Sealed || !h.Standby:
				problem = fmt.Sprintf("%s: sealed %t, standby %t", node.ID, h.Sealed, h.Standby)
			default:
				standbys = append(standbys, node)
			}
		}
		if problem == "" {
			return standbys
		}
		if sleepCtx(ctx, clusterPoll) != nil {
			t.Fatalf("vaulttest: no set of unsealed standbys within %s: %s\n%s", clusterTimeout, problem, c.logTails(30))
		}
	}
}

// StepDown asks the active node to give up being active (sys/step-down, as
// `vault operator step-down`) and returns it; WaitLeaderChange finds its
// successor.
func (c *Cluster) StepDown(t testing.TB) *Node {
	t.Helper()
	leader := c.Leader(t)
	ctx, cancel := context.WithTimeout(context.Background(), clusterTimeout)
	defer cancel()
	if err := leader.Client.Sys().StepDownWithContext(ctx); err != nil {
		t.Fatalf("vaulttest: step-down of %s: %v", leader.ID, err)
	}
	return leader
}

// WaitLeaderChange waits until a node other than old is active and returns
// it.
func (c *Cluster) WaitLeaderChange(t testing.TB, old *Node) *Node {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), clusterTimeout)
	defer cancel()
	n, err := c.waitActive(ctx, old)
	if err != nil {
		t.Fatalf("vaulttest: no node other than %s became active: %v\n%s", old.ID, err, c.logTails(40))
	}
	return n
}

// WaitHealthy waits until every running node is unsealed and autopilot
// calls the cluster of voters healthy, e.g. after Restart.
func (c *Cluster) WaitHealthy(t testing.TB) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), clusterTimeout)
	defer cancel()
	if err := c.waitHealthy(ctx); err != nil {
		t.Fatalf("vaulttest: %v\n%s", err, c.logTails(30))
	}
}

// waitActive polls the running nodes until exactly one other than not is
// active (unsealed, not a standby).
func (c *Cluster) waitActive(ctx context.Context, not *Node) (*Node, error) {
	var last error
	for {
		n, err := c.activeNode(ctx)
		switch {
		case err != nil:
			last = err
		case n == nil:
			last = errors.New("no node is active")
		case n == not:
			last = fmt.Errorf("%s is still active", n.ID)
		default:
			return n, nil
		}
		if sleepCtx(ctx, clusterPoll) != nil {
			return nil, fmt.Errorf("no active node within %s: %w", clusterTimeout, last)
		}
	}
}

// activeNode returns the one active node, nil when none is, and an error
// when two claim to be (a moment during a handover).
func (c *Cluster) activeNode(ctx context.Context) (*Node, error) {
	var active []*Node
	for _, node := range c.Nodes {
		if !node.running {
			continue
		}
		h, err := node.health(ctx)
		if err == nil && h.Initialized && !h.Sealed && !h.Standby {
			active = append(active, node)
		}
	}
	switch len(active) {
	case 0:
		return nil, nil
	case 1:
		return active[0], nil
	default:
		ids := make([]string, len(active))
		for i, n := range active {
			ids[i] = n.ID
		}
		return nil, fmt.Errorf("more than one node claims to be active: %v", ids)
	}
}

// Kill9 kills the node's Vault process with SIGKILL, as a crash would: its
// plugin processes are left behind as orphans (the plugin notices and
// exits on its own), and the node stays down until Restart.
func (n *Node) Kill9(t testing.TB) {
	t.Helper()
	if !n.running {
		t.Fatalf("vaulttest: kill -9 of %s, which is not running", n.ID)
	}
	if err := syscall.Kill(n.cmd.Process.Pid, syscall.SIGKILL); err != nil {
		t.Fatalf("vaulttest: kill -9 %s (pid %d): %v", n.ID, n.cmd.Process.Pid, err)
	}
	select {
	case <-n.done:
	case <-time.After(stopTimeout):
		t.Fatalf("vaulttest: %s (pid %d) still runs %s after SIGKILL", n.ID, n.cmd.Process.Pid, stopTimeout)
	}
	n.running = false
	n.appendLog(fmt.Sprintf("==== vaulttest: %s killed with SIGKILL at %s ====\n", n.ID, time.Now().UTC().Format(time.RFC3339Nano)))
}

// Restart starts a node that Kill9 stopped, with its configuration, data and
// environment, unseals it and waits until it is an unsealed member of the
// cluster again.
func (n *Node) Restart(t testing.TB) {
	t.Helper()
	if n.running {
		t.Fatalf("vaulttest: restart of %s, which is running", n.ID)
	}
	if err := n.start("restarted"); err != nil {
		t.Fatalf("vaulttest: %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), clusterTimeout)
	defer cancel()
	err := n.waitAnswering(ctx)
	if err == nil {
		err = n.unseal(ctx)
	}
	if err != nil {
		t.Fatalf("vaulttest: restart of %s: %v\n%s", n.ID, err, tail(n.Log(), 40))
	}
}

// Running reports whether the node's Vault process runs (it was not killed
// or was restarted since).
func (n *Node) Running() bool { return n.running }

// start launches the node's Vault process, appending to its log.
func (n *Node) start(what string) error {
	logFile, err := os.OpenFile(n.LogPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return fmt.Errorf("open log of %s: %w", n.ID, err)
	}
	defer logFile.Close()
	fmt.Fprintf(logFile, "==== vaulttest: %s %s at %s ====\n", n.ID, what, time.Now().UTC().Format(time.RFC3339Nano))
	cmd := exec.Command(n.cluster.VaultBinary, "server", "-config="+n.configPath, "-log-level="+n.cluster.level)
	cmd.Env = n.env
	if os.Getenv(raceEnv) == "1" {
		cmd.Env = append(cmd.Env, "GORACE=log_path="+n.racePrefix()+" halt_on_error=0")
	}
	cmd.Stdout = logFile
	cmd.Stderr = logFile
	// Own process group, as for Server: the group kill at cleanup takes
	// the plugin processes too.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start %s: %w", n.ID, err)
	}
	done := make(chan struct{})
	go func() {
		_ = cmd.Wait()
		close(done)
	}()
	n.cmd, n.done, n.running = cmd, done, true
	n.groups = append(n.groups, cmd.Process.Pid)
	return nil
}

func (n *Node) racePrefix() string { return filepath.Join(filepath.Dir(n.LogPath), "race") }

func (n *Node) appendLog(line string) {
	if f, err := os.OpenFile(n.LogPath, os.O_WRONLY|os.O_APPEND, 0o600); err == nil {
		_, _ = f.WriteString(line)
		_ = f.Close()
	}
}

// health reads sys/health within a short bound, so one hung node does not
// stall a poll of the others.
func (n *Node) health(ctx context.Context) (*api.HealthResponse, error) {
	ctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	return n.Client.Sys().HealthWithContext(ctx)
}

// waitAnswering waits until the node's API answers sys/health at all.
func (n *Node) waitAnswering(ctx context.Context) error {
	var last error
	for {
		select {
		case <-n.done:
			if strings.Contains(n.Log(), "address already in use") {
				return fmt.Errorf("%s exited: a port of its config was taken meanwhile: %v\n%s", n.ID, n.cmd.ProcessState, tail(n.Log(), 20))
			}
			return fmt.Errorf("%s exited early: %v\n%s", n.ID, n.cmd.ProcessState, tail(n.Log(), 40))
		default:
		}
		_, err := n.health(ctx)
		if err == nil {
			return nil
		}
		last = err
		if sleepCtx(ctx, clusterPoll) != nil {
			return fmt.Errorf("%s did not answer within %s: %v", n.ID, clusterTimeout, last)
		}
	}
}

// unseal gives the node the key share and waits until it is unsealed. A
// node that has yet to join refuses the key ("not initialized") until
// retry_join has reached a leader, so it is offered again until accepted,
// but never after: Vault keeps an accepted key for the join it completes in
// the background, and a second key arriving as that join finishes unseals
// the node twice, leaving two standby loops of which only one ever hears a
// later step-down.
func (n *Node) unseal(ctx context.Context) error {
	var last error
	accepted := false
	for {
		var ss *api.SealStatusResponse
		var err error
		if accepted {
			ss, err = n.Client.Sys().SealStatusWithContext(ctx)
		} else {
			ss, err = n.Client.Sys().UnsealWithContext(ctx, n.cluster.UnsealKey)
			accepted = err == nil
		}
		switch {
		case err != nil:
			last = err
		case !ss.Sealed:
			return nil
		default:
			last = fmt.Errorf("key accepted, still sealed (joining the cluster)")
		}
		select {
		case <-n.done:
			return fmt.Errorf("%s exited while being unsealed: %v\n%s", n.ID, n.cmd.ProcessState, tail(n.Log(), 40))
		default:
		}
		if sleepCtx(ctx, 250*time.Millisecond) != nil {
			return fmt.Errorf("%s was not unsealed within %s: %v", n.ID, clusterTimeout, last)
		}
	}
}

// stop ends every process group of every node: SIGTERM to the running
// servers together (their plugins' Clean runs), then SIGKILL to every group,
// including those that Kill9 left with orphaned plugins. A failed test gets
// each node's log tail.
func (c *Cluster) stop(t testing.TB) {
	for _, n := range c.Nodes {
		if n.running {
			_ = syscall.Kill(-n.cmd.Process.Pid, syscall.SIGTERM)
		}
	}
	deadline := time.After(stopTimeout)
	for _, n := range c.Nodes {
		if !n.running {
			continue
		}
		select {
		case <-n.done:
		case <-deadline:
			t.Logf("vaulttest: %s did not stop within %s after SIGTERM; killing it", n.ID, stopTimeout)
		}
	}
	var wg sync.WaitGroup
	for _, n := range c.Nodes {
		for _, pgid := range n.groups {
			_ = syscall.Kill(-pgid, syscall.SIGKILL)
		}
		if n.cmd != nil {
			<-n.done
		}
		n.running = false
		for _, pgid := range n.groups {
			wg.Add(1)
			go func() {
				defer wg.Done()
				end := time.Now().Add(stopTimeout)
				for syscall.Kill(-pgid, 0) == nil {
					if time.Now().After(end) {
						t.Errorf("vaulttest: processes of %s's group %d still alive after SIGKILL", n.ID, pgid)
						return
					}
					time.Sleep(20 * time.Millisecond)
				}
			}()
		}
	}
	wg.Wait()
	for _, n := range c.Nodes {
		if r := raceReports(n.Log()) + raceFiles(n.racePrefix()); r != "" {
			t.Errorf("vaulttest: the race detector reported in the plugin on %s:\n%s", n.ID, r)
		}
	}
	if t.Failed() {
		t.Logf("vaulttest: cluster logs:\n%s", c.logTails(60))
	}
}

// logTails is the last lines of every node's log.
func (c *Cluster) logTails(lines int) string {
	var b strings.Builder
	for _, n := range c.Nodes {
		fmt.Fprintf(&b, "---- last lines of %s (%s) ----\n%s\n", n.ID, n.LogPath, tail(n.Log(), lines))
	}
	return b.String()
}

// sleepCtx sleeps for d or until ctx ends, answering ctx's error then.
func sleepCtx(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}
