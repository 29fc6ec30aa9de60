package main

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/appliance-dev/appliance/bench/internal/benchkit"
)

// client is an HTTPS client trusting t's CA, for pushing and tokens.
func client(t *target) (*http.Client, error) {
	pem, err := os.ReadFile(t.ca)
	if err != nil {
		return nil, err
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("%s holds no certificate", t.ca)
	}
	return &http.Client{Timeout: 10 * time.Minute, Transport: &http.Transport{
		TLSClientConfig: &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}}}, nil
}

// token answers t's challenge for scope as a registry client does:
// "" when t asks for none, else "Bearer …" from its token realm, with
// Basic credentials when user is set.
func token(ctx context.Context, hc *http.Client, t *target, scope, user, password string) (string, error) {
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, t.base.JoinPath("/v2/").String(), nil)
	resp, err := hc.Do(req)
	if err != nil {
		return "", err
	}
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 1<<20))
	resp.Body.Close()
	if resp.StatusCode == http.StatusOK {
		return "", nil
	}
	scheme, params := benchkit.ParseChallenge(resp.Header.Get("WWW-Authenticate"))
	if resp.StatusCode != http.StatusUnauthorized || !strings.EqualFold(scheme, "bearer") || params["realm"] == "" {
		return "", fmt.Errorf("GET /v2/: %s, challenge %q", resp.Status, resp.Header.Get("WWW-Authenticate"))
	}
	realm, err := t.base.Parse(params["realm"])
	if err != nil || realm.Host != t.base.Host {
		return "", fmt.Errorf("token realm %q is not the registry's host", params["realm"])
	}
	q := realm.Query()
	q.Set("service", params["service"])
	q.Set("scope", scope)
	realm.RawQuery = q.Encode()
	req, _ = http.NewRequestWithContext(ctx, http.MethodGet, realm.String(), nil)
	if user != "" {
		req.SetBasicAuth(user, password)
	}
	resp, err = hc.Do(req)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	var tr struct {
		Token       string `json:"token"`
		AccessToken string `json:"access_token"`
	}
	if resp.StatusCode != http.StatusOK || json.Unmarshal(body, &tr) != nil || tr.Token+tr.AccessToken == "" {
		return "", fmt.Errorf("token endpoint: %s: %.200s", resp.Status, body)
	}
	if tr.Token == "" {
		tr.Token = tr.AccessToken
	}
	return "Bearer " + tr.Token, nil
}

// push uploads img to t as its admin (docker-registry: anonymously).
func push(ctx context.Context, t *target, img *benchkit.ImageSet) error {
	hc, err := client(t)
	if err != nil {
		return err
	}
	defer hc.CloseIdleConnections()
	authz, err := token(ctx, hc, t, "repository:"+repo+":push,pull", t.user, t.password)
	if err != nil {
		return err
	}
	benchkit.Logf("%s: pushing %s:%s", t.name, repo, tag)
	return benchkit.PushImage(ctx, hc, t.base, authz, repo, img, img.Images[0])
}

// round has n curl processes pull the layer from t at once over HTTP/proto.
// It returns the aggregate MB/s, t's CPU seconds per GiB pulled, and the
// cores other processes kept busy meanwhile.
func round(ctx context.Context, t *target, proto string, n int, layer benchkit.Layer) (mbps, cpuPerGiB, other float64, err error) {
	hc, err := client(t)
	if err != nil {
		return 0, 0, 0, err
	}
	authz, err := token(ctx, hc, t, "repository:"+repo+":pull", "", "")
	hc.CloseIdleConnections()
	if err != nil {
		return 0, 0, 0, fmt.Errorf("anonymous pull token: %w", err)
	}
	flagProto := "--http1.1"
	if proto == "2" {
		flagProto = "--http2"
	}
	u := t.base.JoinPath("/v2/", repo, "/blobs/", layer.Digest).String()
	args := []string{"-sS", "--fail", "-o", "/dev/null", "--cacert", t.ca, flagProto, "--max-time", "300",
		"-w", "%{http_version} %{size_download}"}
	if authz != "" {
		args = append(args, "-H", "Authorization: "+authz)
	}
	args = append(args, u)
	cmds := make([]*exec.Cmd, n)
	outs := make([]*bytes.Buffer, n)
	for i := range cmds {
		outs[i] = &bytes.Buffer{}
		cmds[i] = exec.CommandContext(ctx, "curl", args...)
		cmds[i].Stdout = outs[i]
		cmds[i].Stderr = outs[i]
	}
	w := benchkit.BeginWindow(t.proc.PID())
	start := time.Now()
	var wg sync.WaitGroup
	errs := make([]error, n)
	for i, c := range cmds {
		wg.Go(func() { errs[i] = c.Run() })
	}
	wg.Wait()
	elapsed := time.Since(start).Seconds()
	server, _, busy, _ := w.End()
	var curlCPU float64
	for i := range cmds {
		if st := cmds[i].ProcessState; st != nil {
			curlCPU += (st.UserTime() + st.SystemTime()).Seconds()
		}
		if errs[i] != nil {
			return 0, 0, 0, fmt.Errorf("curl: %w: %s", errs[i], outs[i])
		}
		f := strings.Fields(outs[i].String())
		if len(f) != 2 || f[0] != proto || f[1] != strconv.FormatInt(layer.Size, 10) {
			return 0, 0, 0, fmt.Errorf("curl got HTTP/version and bytes %q, want HTTP/%s and %d", outs[i], proto, layer.Size)
		}
	}
	total := float64(n) * float64(layer.Size)
	if elapsed <= 0 {
		return 0, 0, 0, errors.New("no time elapsed")
	}
	return total / elapsed / 1e6, server / (total / (1 << 30)), max(0, busy-curlCPU) / elapsed, nil
}
