package main

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"math/big"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/bcrypt"

	"github.com/selfheal/selfheal/internal/dockertest"
	"github.com/selfheal/selfheal/internal/pgtest"
)

// TestHandoffBehindTLSAndBasicAuth: Alertmanager serves only HTTPS with
// basic auth (exporter-toolkit's --web.config.file); selfheal reaches it
// through alertmanager.http_config — a CA file, a user and a password
// file — and its hand-off (a refused action: SelfhealRefused) arrives.
func TestHandoffBehindTLSAndBasicAuth(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	caFile, certFile, keyFile := selfSigned(t, dir)
	hash, err := bcrypt.GenerateFromPassword([]byte("s3cret"), bcrypt.MinCost)
	if err != nil {
		t.Fatal(err)
	}
	webConfig := writeFile(t, "web.yml", "tls_server_config: {cert_file: "+certFile+", key_file: "+keyFile+"}\n"+
		"basic_auth_users: {selfheal: '"+string(hash)+"'}\n")
	amAddr := freeAddr(t)
	amConfig := writeFile(t, "alertmanager.yml", shipped(t, "alerting/alertmanager.yml",
		"/etc/alertmanager/selfheal-token", filepath.Join(dir, "token")))
	background(t, nil, requireTool(t, "prometheus-alertmanager"), "--config.file="+amConfig, "--web.config.file="+webConfig,
		"--storage.path="+filepath.Join(dir, "am"), "--web.listen-address="+amAddr, "--cluster.listen-address=")

	ca, err := os.ReadFile(caFile)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(ca)
	client := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}
	get := func(path string, auth bool) (*http.Response, error) {
		req, _ := http.NewRequest(http.MethodGet, "https://"+amAddr+path, nil)
		if auth {
			req.SetBasicAuth("selfheal", "s3cret")
		}
		return client.Do(req)
	}
	dockertest.WaitFor(t, 20*time.Second, "alertmanager over https", func() bool {
		resp, err := get("/-/ready", true)
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	})
	if resp, err := get("/api/v2/alerts", false); err != nil || resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("alertmanager without credentials: %v %v; the test needs it to refuse", resp, err)
	}

	pwFile := writeFile(t, "am-password", "s3cret\n")
	refused := dockertest.Run(t, dockertest.Spec{Stopped: true}) // not opted in: refused
	dsn := pgtest.DSN(t)
	env := []string{"SELFHEAL_DATABASE_URL=" + dsn, "SELFHEAL_WEBHOOK_TOKEN=tok"}
	config := writeFile(t, "selfheal.yml", `
engine: {poll_interval: 200ms}
alertmanager:
  url: 'https://`+amAddr+`'
  interval: 1s
  http_config:
    basic_auth: {username: selfheal, password_file: `+pwFile+`}
    tls_config: {ca_file: `+caFile+`}
remediations:
  - {name: service-down, match: ['alertname="ServiceDown"'], category: A, target: '{{ .Labels.service }}', steps: [restart]}
`)
	addr := freeAddr(t)
	daemon(t, env, config, addr)
	post(t, env, addr, "ServiceDown", "service="+refused)

	dockertest.WaitFor(t, 30*time.Second, "SelfhealRefused in the TLS, basic-auth Alertmanager", func() bool {
		resp, err := get("/api/v2/alerts?filter=alertname%3D%22SelfhealRefused%22", true)
		if err != nil {
			return false
		}
		defer resp.Body.Close()
		var alerts []struct {
			Labels map[string]string `json:"labels"`
		}
		return json.NewDecoder(resp.Body).Decode(&alerts) == nil && len(alerts) == 1 && alerts[0].Labels["target"] == refused
	})

	// The commands that talk to Alertmanager take the same settings, from
	// a file as amtool does: plan sees the hand-off, simulate reaches it.
	httpConfig := writeFile(t, "am-http.yml", "basic_auth: {username: selfheal, password_file: "+pwFile+"}\ntls_config: {ca_file: "+caFile+"}\n")
	code, out, errOut := selfheal(t, env, "plan", "--config.file="+config, "--alertmanager.url=https://"+amAddr,
		"--alertmanager.http-config.file="+httpConfig)
	if code != 3 || !strings.Contains(out, "SelfhealRefused") {
		t.Errorf("plan --alertmanager.url over TLS and basic auth: exit %d\n%s%s", code, out, errOut)
	}
	code, out, errOut = selfheal(t, env, "simulate", "--alertmanager.url=https://"+amAddr,
		"--alertmanager.http-config.file="+httpConfig, "ServiceDown", "service=simulated")
	if code != 0 || !strings.Contains(out, "Alertmanager routed it to: operators, selfheal") {
		t.Errorf("simulate --alertmanager.url over TLS and basic auth: exit %d\n%s%s", code, out, errOut)
	}
	if code, _, errOut := selfheal(t, env, "simulate", "--alertmanager.url=https://"+amAddr, "ServiceDown", "service=simulated"); code != 1 {
		t.Errorf("simulate without the settings: exit %d %s; the Alertmanager must refuse it", code, errOut)
	}
}

// selfSigned writes a CA and a certificate for 127.0.0.1 signed by it, and
// returns the three files.
func selfSigned(t *testing.T, dir string) (ca, cert, key string) {
	t.Helper()
	write := func(name, typ string, der []byte) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	caTmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "selfheal test CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour), IsCA: true, BasicConstraintsValid: true,
		KeyUsage: x509.KeyUsageCertSign}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	caCert, _ := x509.ParseCertificate(caDER)
	srvKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	srvTmpl := &x509.Certificate{SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: "127.0.0.1"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour), IPAddresses: []net.IP{net.ParseIP("127.0.0.1")},
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}
	srvDER, err := x509.CreateCertificate(rand.Reader, srvTmpl, caCert, &srvKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalECPrivateKey(srvKey)
	if err != nil {
		t.Fatal(err)
	}
	return write("ca.pem", "CERTIFICATE", caDER), write("cert.pem", "CERTIFICATE", srvDER), write("key.pem", "EC PRIVATE KEY", keyDER)
}
