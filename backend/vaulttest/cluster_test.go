package vaulttest

import (
	"bytes"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/vault/api"
)

// TestCluster forms a 3-node Raft cluster with the plugin and takes it
// through what the HA tests rely on: forwarding from standbys, a crash of
// the active node, a restarted node rejoining, a step-down, and a per-node
// environment that reaches the plugin. The phases build on each other so
// the cluster starts once.
func TestCluster(t *testing.T) {
	c := NewCluster(t, &ClusterOptions{NodeEnv: [][]string{
		{"VAULTTEST_NODE=node1"}, {"VAULTTEST_NODE=node2"}, {"VAULTTEST_NODE=node3"},
	}})

	t.Run("three unsealed nodes, one active, the plugin mounted", func(t *testing.T) {
		leader := c.Leader(t)
		standbys := c.Standbys(t)
		if len(standbys) != 2 {
			t.Fatalf("standbys %v, want 2 besides %s", nodeIDs(standbys), leader.ID)
		}
		// Read through a standby: it forwards to the active node.
		mounts, err := standbys[0].Client.Sys().ListMountsWithContext(t.Context())
		if err != nil {
			t.Fatalf("list mounts through standby %s: %v", standbys[0].ID, err)
		}
		if m := mounts[MountPath+"/"]; m == nil || m.RunningSha256 != c.PluginSHA256 || m.RunningVersion != PluginVersion {
			t.Fatalf("mount = %+v, want the plugin at %s sha256 %s", m, PluginVersion, c.PluginSHA256)
		}
	})

	t.Run("each node and the plugin of the active one have the node's environment", func(t *testing.T) {
		for _, n := range c.Nodes {
			if got := environ(t, n.Pid())["VAULTTEST_NODE"]; got != n.ID {
				t.Errorf("%s runs with VAULTTEST_NODE=%q", n.ID, got)
			}
		}
		leader := c.Leader(t)
		plugins := ChildPIDs(t, leader.Pid())
		if len(plugins) == 0 {
			t.Fatalf("the active node %s (pid %d) has no plugin process", leader.ID, leader.Pid())
		}
		for _, pid := range plugins {
			if got := environ(t, pid)["VAULTTEST_NODE"]; got != leader.ID {
				t.Errorf("plugin process %d of %s runs with VAULTTEST_NODE=%q", pid, leader.ID, got)
			}
		}
	})

	t.Run("a write through a standby is forwarded to the active node", func(t *testing.T) {
		leader := c.Leader(t)
		if err := leader.Client.Sys().MountWithContext(t.Context(), "kv", &api.MountInput{Type: "kv"}); err != nil {
			t.Fatalf("enable kv: %v", err)
		}
		standbys := c.Standbys(t)
		if _, err := standbys[0].Client.Logical().WriteWithContext(t.Context(), "kv/probe", map[string]any{"from": standbys[0].ID}); err != nil {
			t.Fatalf("write through standby %s: %v", standbys[0].ID, err)
		}
		for _, n := range append([]*Node{leader}, standbys...) {
			s, err := n.Client.Logical().ReadWithContext(t.Context(), "kv/probe")
			if err != nil || s == nil || s.Data["from"] != standbys[0].ID {
				t.Errorf("read kv/probe through %s: %v, %v", n.ID, s, err)
			}
		}
	})

	var killed *Node
	t.Run("kill -9 of the active node: another becomes active and serves the plugin", func(t *testing.T) {
		killed = c.Leader(t)
		start := time.Now()
		killed.Kill9(t)
		next := c.WaitLeaderChange(t, killed)
		t.Logf("%s killed; %s active after %s", killed.ID, next.ID, time.Since(start).Round(time.Millisecond))
		if s, err := next.Client.Logical().ReadWithContext(t.Context(), "kv/probe"); err != nil || s == nil {
			t.Errorf("read kv/probe on the new active node: %v, %v", s, err)
		}
		// The plugin answers on the new active node.
		if _, err := next.Client.Logical().ReadWithContext(t.Context(), MountPath+"/configure"); err != nil {
			t.Errorf("read %s/configure on %s: %v", MountPath, next.ID, err)
		}
	})

	t.Run("the killed node restarts, rejoins and forwards as a standby", func(t *testing.T) {
		if killed == nil {
			t.Fatal("no node was killed")
		}
		start := time.Now()
		killed.Restart(t)
		c.WaitHealthy(t)
		t.Logf("%s rejoined in %s", killed.ID, time.Since(start).Round(time.Millisecond))
		if !containsNode(c.Standbys(t), killed) {
			t.Fatalf("%s is not a standby after rejoining", killed.ID)
		}
		if _, err := killed.Client.Logical().WriteWithContext(t.Context(), "kv/probe", map[string]any{"from": killed.ID}); err != nil {
			t.Fatalf("write through the rejoined %s: %v", killed.ID, err)
		}
		if s, err := c.Leader(t).Client.Logical().ReadWithContext(t.Context(), "kv/probe"); err != nil || s == nil || s.Data["from"] != killed.ID {
			t.Errorf("read kv/probe on the active node: %v, %v", s, err)
		}
	})

	t.Run("step-down hands the active role to another node", func(t *testing.T) {
		start := time.Now()
		old := c.StepDown(t)
		next := c.WaitLeaderChange(t, old)
		t.Logf("%s stepped down; %s active after %s", old.ID, next.ID, time.Since(start).Round(time.Millisecond))
		if _, err := old.Client.Logical().ReadWithContext(t.Context(), MountPath+"/configure"); err != nil {
			t.Errorf("read %s/configure through %s after its step-down: %v", MountPath, old.ID, err)
		}
	})
}

func nodeIDs(nodes []*Node) []string {
	ids := make([]string, len(nodes))
	for i, n := range nodes {
		ids[i] = n.ID
	}
	return ids
}

func containsNode(nodes []*Node, n *Node) bool {
	for _, m := range nodes {
		if m == n {
			return true
		}
	}
	return false
}

// environ reads a process's environment from /proc.
func environ(t *testing.T, pid int) map[string]string {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/environ", pid))
	if err != nil {
		t.Fatalf("read the environment of %d: %v", pid, err)
	}
	env := map[string]string{}
	for _, kv := range bytes.Split(b, []byte{0}) {
		if k, v, ok := strings.Cut(string(kv), "="); ok {
			env[k] = v
		}
	}
	return env
}
