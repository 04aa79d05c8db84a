// Package promtest runs a real Prometheus server (Debian's prometheus
// package: /usr/bin/prometheus and /usr/bin/promtool) for tests: its own
// process, configuration, storage and loopback port, stopped at cleanup,
// and asked through its own HTTP query API.
package promtest

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// The binaries of Debian's prometheus package (apt-get install prometheus).
const (
	PrometheusBinary = "/usr/bin/prometheus"
	PromtoolBinary   = "/usr/bin/promtool"
)

// Server is a running Prometheus.
type Server struct {
	// URL is its HTTP address, e.g. http://127.0.0.1:41234.
	URL string
	// LogPath is its log.
	LogPath string
}

// Start runs Prometheus with config (prometheus.yml text) and waits until
// it answers. A missing binary fails the test: install the package, the
// test is not skipped.
func Start(t testing.TB, config string) *Server {
	t.Helper()
	need(t, PrometheusBinary)
	dir := t.TempDir()
	cfg := filepath.Join(dir, "prometheus.yml")
	if err := os.WriteFile(cfg, []byte(config), 0o600); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command(PromtoolBinary, "check", "config", cfg).CombinedOutput(); err != nil {
		t.Fatalf("promtool check config refused the test's configuration: %v\n%s\n%s", err, out, config)
	}
	port, err := freePort()
	if err != nil {
		t.Fatal(err)
	}
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	logPath := filepath.Join(dir, "prometheus.log")
	logf, err := os.Create(logPath)
	if err != nil {
		t.Fatal(err)
	}
	// Its own process on its own port and storage: whatever service the
	// package installed is left alone.
	cmd := exec.Command(PrometheusBinary,
		"--config.file="+cfg,
		"--storage.tsdb.path="+filepath.Join(dir, "data"),
		"--web.listen-address="+addr,
		"--log.level=debug",
	)
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		logf.Close()
		t.Fatalf("starting %s: %v", PrometheusBinary, err)
	}
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); logf.Close(); close(done) }()
	s := &Server{URL: "http://" + addr, LogPath: logPath}
	t.Cleanup(func() {
		_ = cmd.Process.Signal(os.Interrupt)
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			_ = cmd.Process.Kill()
			<-done
		}
		if t.Failed() {
			t.Logf("prometheus log (tail):\n%s", s.logTail(40))
		}
	})
	deadline := time.Now().Add(30 * time.Second)
	for {
		resp, err := http.Get(s.URL + "/-/ready")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return s
			}
		}
		select {
		case <-done:
			t.Fatalf("prometheus exited before it was ready:\n%s", s.logTail(40))
		case <-time.After(100 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatalf("prometheus not ready within 30s:\n%s", s.logTail(40))
		}
	}
}

// Sample is one series of an instant query's answer.
type Sample struct {
	Labels map[string]string
	Value  float64
}

// Query runs an instant PromQL query through /api/v1/query.
func (s *Server) Query(ctx context.Context, q string) ([]Sample, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, s.URL+"/api/v1/query?query="+url.QueryEscape(q), nil)
	if err != nil {
		return nil, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, fmt.Errorf("query %s: %w", q, err)
	}
	defer resp.Body.Close()
	var body struct {
		Status string `json:"status"`
		Error  string `json:"error"`
		Data   struct {
			ResultType string `json:"resultType"`
			Result     []struct {
				Metric map[string]string `json:"metric"`
				Value  [2]any            `json:"value"`
			} `json:"result"`
		} `json:"data"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&body); err != nil {
		return nil, fmt.Errorf("query %s: decoding the answer: %w", q, err)
	}
	if body.Status != "success" {
		return nil, fmt.Errorf("query %s: %s", q, body.Error)
	}
	if body.Data.ResultType != "vector" {
		return nil, fmt.Errorf("query %s: a %s, want an instant vector", q, body.Data.ResultType)
	}
	out := make([]Sample, 0, len(body.Data.Result))
	for _, r := range body.Data.Result {
		str, _ := r.Value[1].(string)
		v, err := strconv.ParseFloat(str, 64)
		if err != nil {
			return nil, fmt.Errorf("query %s: value %v: %w", q, r.Value[1], err)
		}
		out = append(out, Sample{Labels: r.Metric, Value: v})
	}
	return out, nil
}

// WaitFor queries q until one of its samples satisfies ok and returns that
// sample, failing the test after timeout with the last answer.
func (s *Server) WaitFor(t testing.TB, q string, timeout time.Duration, ok func(float64) bool) Sample {
	t.Helper()
	deadline := time.Now().Add(timeout)
	var last []Sample
	var lastErr error
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		last, lastErr = s.Query(ctx, q)
		cancel()
		for _, smp := range last {
			if ok(smp.Value) {
				return smp
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("prometheus: %s never met the condition within %s; last answer %v (error %v)", q, timeout, last, lastErr)
		}
		time.Sleep(500 * time.Millisecond)
	}
}

// CheckMetrics runs `promtool check metrics` over a scraped body: the
// linter of Prometheus' naming and format conventions. It returns what
// promtool printed and an error when it found problems.
func CheckMetrics(t testing.TB, body []byte) (string, error) {
	t.Helper()
	need(t, PromtoolBinary)
	cmd := exec.Command(PromtoolBinary, "check", "metrics")
	cmd.Stdin = bytes.NewReader(body)
	out, err := cmd.CombinedOutput()
	var exit *exec.ExitError
	if err != nil && !errors.As(err, &exit) {
		t.Fatalf("running promtool: %v", err)
	}
	return string(out), err
}

func (s *Server) logTail(n int) string {
	b, _ := os.ReadFile(s.LogPath)
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	return strings.Join(lines[max(0, len(lines)-n):], "\n")
}

func need(t testing.TB, bin string) {
	t.Helper()
	if _, err := os.Stat(bin); err != nil {
		t.Fatalf("%s is missing (%v): install Debian's prometheus package (apt-get install prometheus; .ci/run lists it)", bin, err)
	}
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// RulesHealthy reports the rule groups' health from /api/v1/rules: an
// error names the first rule that does not evaluate, or says none loaded.
func (s *Server) RulesHealthy(ctx context.Context) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, s.URL+"/api/v1/rules", nil)
	if err != nil {
		return err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	var body struct {
		Data struct {
			Groups []struct {
				Name  string `json:"name"`
				Rules []struct {
					Name      string `json:"name"`
					Health    string `json:"health"`
					LastError string `json:"lastError"`
				} `json:"rules"`
			} `json:"groups"`
		} `json:"data"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&body); err != nil {
		return fmt.Errorf("decoding /api/v1/rules: %w", err)
	}
	n := 0
	for _, g := range body.Data.Groups {
		for _, r := range g.Rules {
			n++
			if r.Health != "ok" {
				return fmt.Errorf("rule %s of group %s: health %q %s", r.Name, g.Name, r.Health, r.LastError)
			}
		}
	}
	if n == 0 {
		return errors.New("no rules loaded")
	}
	return nil
}
