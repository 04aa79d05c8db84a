package tokenredirect

import (
	"errors"
	"net/http"
	"testing"
)

func TestCheck(t *testing.T) {
	req := func(u string) *http.Request {
		r, err := http.NewRequest(http.MethodGet, u, nil)
		if err != nil {
			t.Fatal(err)
		}
		return r
	}
	tests := []struct {
		name string
		via  []string
		to   string
		ok   bool
	}{
		{"same host and port", []string{"https://vault.example:8200/v1/x"}, "https://vault.example:8200/v1/y", true},
		{"host case and default port", []string{"https://Vault.Example/v1/x"}, "https://vault.example:443/v1/y", true},
		{"another host", []string{"https://vault.example/v1/x"}, "https://evil.example/v1/x", false},
		{"another port", []string{"https://vault.example:8200/v1/x"}, "https://vault.example:8201/v1/x", false},
		{"https to http", []string{"https://vault.example/v1/x"}, "http://vault.example/v1/x", false},
		{"https to http:443", []string{"https://vault.example/v1/x"}, "http://vault.example:443/v1/x", false},
		{"back to http after an https hop", []string{"http://vault.example:8200/v1/x", "https://vault.example:8200/v1/x"}, "http://vault.example:8200/v1/x", false},
		{"http on one host", []string{"http://127.0.0.1:8200/v1/x"}, "http://127.0.0.1:8200/v1/y", true},
		{"too many", []string{"https://v/1", "https://v/2", "https://v/3", "https://v/4", "https://v/5", "https://v/6", "https://v/7", "https://v/8", "https://v/9", "https://v/10"}, "https://v/11", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var via []*http.Request
			for _, u := range tt.via {
				via = append(via, req(u))
			}
			err := Check(req(tt.to), via)
			if (err == nil) != tt.ok {
				t.Fatalf("Check = %v, want ok=%v", err, tt.ok)
			}
			if err != nil && !errors.Is(err, ErrRefused) {
				t.Fatalf("error %v is not ErrRefused", err)
			}
		})
	}
}
