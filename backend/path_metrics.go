package backend

import (
	"context"
	"fmt"
	"net/http"
	"strings"

	"github.com/hashicorp/vault/sdk/framework"
	"github.com/hashicorp/vault/sdk/logical"

	"github.com/flant/flant_gitops/backend/events/metrics"
)

// metricsMediaType is the declared media type of the metrics answer; the
// Content-Type it is sent with adds the format's version.
const metricsMediaType = "text/plain"

func pathMetrics(b *backend) []*framework.Path {
	return []*framework.Path{{
		Pattern:      "metrics/?$",
		DisplayAttrs: &framework.DisplayAttributes{OperationPrefix: apiPrefix, OperationSuffix: "metrics"},
		Fields: map[string]*framework.FieldSchema{
			"format": {
				Type:          framework.TypeString,
				Default:       "prometheus",
				AllowedValues: []any{"prometheus"},
				Description:   "The exposition format; only prometheus (the text format 0.0.4), the default. Accepted so that scrape configs written for Vault's sys/metrics work unchanged.",
				Query:         true,
			},
		},
		Operations: map[logical.Operation]framework.OperationHandler{
			logical.ReadOperation: &framework.PathOperation{
				Callback: b.pathMetricsRead,
				Responses: map[int][]framework.Response{http.StatusOK: {{
					Description: "The metrics in Prometheus' text exposition format 0.0.4: a raw body, not JSON.",
					MediaType:   metricsMediaType,
				}}},
				Summary:                     "The plugin's metrics for Prometheus to scrape.",
				ForwardPerformanceStandby:   true,
				ForwardPerformanceSecondary: true,
			},
		},
		HelpSynopsis:    "Metrics of this mount in the Prometheus text format.",
		HelpDescription: pathMetricsHelpDesc,
	}}
}

func (b *backend) pathMetricsRead(_ context.Context, req *logical.Request, d *framework.FieldData) (*logical.Response, error) {
	if f := d.Get("format").(string); f != "prometheus" {
		return errorResponse("format %q is not served: use format=prometheus (the default) or leave it out", f)
	}
	if req.WrapInfo != nil && req.WrapInfo.TTL > 0 {
		// Vault refuses to wrap a raw answer with a 500; say why instead.
		return errorResponse("the metrics answer is a raw text body and cannot be response-wrapped: read it without -wrap-ttl")
	}
	body, err := b.metrics.Text()
	if err != nil {
		return nil, fmt.Errorf("answering the metrics: %w", err)
	}
	return &logical.Response{Data: map[string]any{
		logical.HTTPContentType: metrics.ContentType,
		logical.HTTPStatusCode:  http.StatusOK,
		// Bytes: over the plugin's gRPC they travel as base64, which
		// Vault's raw-response writer decodes; a string body could be
		// taken for base64 when it happens to parse as such.
		logical.HTTPRawBody: body,
	}}, nil
}

var pathMetricsHelpDesc = strings.TrimSpace(`
Answers this mount's metrics in Prometheus' text exposition format (Content-Type
text/plain; version=0.0.4): polls by outcome, the time of the last successful
poll, commits refused by cause, runs by outcome and their duration, the run in
progress, patch requests by target and outcome, group size and push latency,
the patch queue, webhook deliveries, failed deliveries of commit statuses and
notifications, and events the subscribers dropped.

The numbers are those of the process that answers: the request is forwarded to
the active node, where the watch runs and patches are pushed. They start from
zero when the plugin starts (a counter reset, which Prometheus' rate() handles).

Read it like Vault's sys/metrics, with a token whose policy allows

    path "flant_gitops/metrics" { capabilities = ["read"] }

for example from Prometheus with "metrics_path: /v1/flant_gitops/metrics" and
"authorization: { credentials_file: /etc/prometheus/vault-token }". The answer
cannot be response-wrapped.
`)
