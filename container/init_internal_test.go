package container

import (
	"strings"
	"testing"
	"time"
)

// TestEngineFitsInit: the init runs only where the plugin's binary can; any
// other engine gets the follower alone and a reason for the warning.
func TestEngineFitsInit(t *testing.T) {
	tests := []struct {
		osType, arch, goos, goarch string
		wantWarn                   string
	}{
		{"linux", "x86_64", "linux", "amd64", ""},
		{"linux", "aarch64", "linux", "arm64", ""},
		{"Linux", "X86_64", "linux", "amd64", ""},
		{"linux", "aarch64", "linux", "amd64", "architecture aarch64 is not the plugin's linux/amd64"},
		{"linux", "x86_64", "linux", "arm64", "architecture x86_64 is not the plugin's linux/arm64"},
		{"windows", "x86_64", "linux", "amd64", "runs windows containers"},
		{"linux", "x86_64", "darwin", "arm64", "plugin runs on darwin"},
		{"linux", "mips", "linux", "mips", "architecture mips"},
	}
	for _, tt := range tests {
		t.Run(tt.osType+"/"+tt.arch+" for "+tt.goos+"/"+tt.goarch, func(t *testing.T) {
			got := engineFitsInit(tt.osType, tt.arch, tt.goos, tt.goarch)
			if (tt.wantWarn == "") != (got == "") || (tt.wantWarn != "" && !contains(got, tt.wantWarn)) {
				t.Fatalf("got %q, want %q", got, tt.wantWarn)
			}
		})
	}
}

func TestInitTimedOut(t *testing.T) {
	dl := time.Unix(1000, 0)
	tests := []struct {
		name     string
		code     int
		deadline time.Time
		at       time.Time
		want     bool
	}{
		{name: "the init's code at the deadline", code: ExitTimeout, deadline: dl, at: dl.Add(time.Second), want: true},
		{name: "just before, within the clock tolerance", code: ExitTimeout, deadline: dl, at: dl.Add(-time.Second), want: true},
		{name: "the same code long before: the command's", code: ExitTimeout, deadline: dl, at: dl.Add(-time.Minute)},
		{name: "another code", code: 1, deadline: dl, at: dl.Add(time.Minute)},
		{name: "no init", code: ExitTimeout, at: dl},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := initTimedOut(tt.code, tt.deadline, tt.at); got != tt.want {
				t.Fatalf("got %v, want %v", got, tt.want)
			}
		})
	}
}

func TestCheckInitBinary(t *testing.T) {
	if _, _, err := checkInitBinary("/bin/ls"); err == nil || !contains(err.Error(), "CGO_ENABLED=0") {
		t.Fatalf("a dynamic binary: %v", err)
	}
	if _, _, err := checkInitBinary("/etc/hostname"); err == nil {
		t.Fatal("a text file passes as the init")
	}
}

func contains(s, sub string) bool { return strings.Contains(s, sub) }
