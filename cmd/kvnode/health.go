package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/urfave/cli/v3"
)

const (
	flagURL = "url"

	defaultHealthURL     = "http://127.0.0.1:9090/readyz"
	defaultHealthTimeout = 2 * time.Second
	// maxHealthBody bounds what is read of the answer: it is a one-line
	// reason, and a misdirected URL must not make the probe read a
	// large page.
	maxHealthBody = 4 << 10
)

// healthCommand is `kvnode health`: an HTTP probe for images without a
// shell or curl (the FROM scratch image), usable as a Docker healthcheck
// or an exec probe: exit status 0 when the URL answers 2xx, 1 otherwise.
func healthCommand() *cli.Command {
	return &cli.Command{
		Name:      "health",
		Usage:     "probe a node's /readyz or /healthz endpoint (exit 0 when it answers 2xx)",
		UsageText: "kvnode health [--url URL] [--timeout D]",
		Flags: []cli.Flag{
			&cli.StringFlag{Name: flagURL, Sources: env("health-url"), Value: defaultHealthURL,
				Usage: "URL to probe"},
			&cli.DurationFlag{Name: flagTimeout, Sources: env("health-timeout"), Value: defaultHealthTimeout,
				Usage: "bound on the whole probe"},
		},
		Action: action(func(ctx context.Context, cmd *cli.Command) error {
			if err := wantArgs(cmd, 0, 0, "[--url URL]"); err != nil {
				return err
			}
			return probe(ctx, cmd.Writer, cmd.String(flagURL), cmd.Duration(flagTimeout))
		}),
	}
}

// probe GETs rawURL within timeout and prints the first line of the
// answer; a non-2xx answer or no answer is an error carrying that line.
func probe(ctx context.Context, out io.Writer, rawURL string, timeout time.Duration) error {
	u, err := url.Parse(rawURL)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return usagef("--%s %q is not an http:// or https:// URL", flagURL, rawURL)
	}
	if timeout <= 0 {
		return usagef("--%s must be positive, got %v", flagTimeout, timeout)
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, rawURL, nil)
	if err != nil {
		return usagef("--%s %q: %v", flagURL, rawURL, err)
	}
	// A fresh transport, closed on return: a probe is a one-off, and
	// keeping an idle connection would outlive the command.
	tr := &http.Transport{DisableKeepAlives: true}
	defer tr.CloseIdleConnections()
	resp, err := (&http.Client{Transport: tr}).Do(req)
	if err != nil {
		if errors.Is(err, context.DeadlineExceeded) {
			return fmt.Errorf("%s: no answer within %v", rawURL, timeout)
		}
		return fmt.Errorf("%s: %v", rawURL, unwrapURLError(err))
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, maxHealthBody))
	line, _, _ := strings.Cut(strings.TrimSpace(string(body)), "\n")
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		if line == "" {
			return fmt.Errorf("%s: %s", rawURL, resp.Status)
		}
		return fmt.Errorf("%s: %s: %s", rawURL, resp.Status, line)
	}
	if line == "" {
		line = resp.Status
	}
	fmt.Fprintln(out, line)
	return nil
}

// unwrapURLError drops the `Get "URL":` prefix net/http adds, since the
// message already starts with the URL.
func unwrapURLError(err error) error {
	var ue *url.Error
	if errors.As(err, &ue) {
		return ue.Err
	}
	return err
}
