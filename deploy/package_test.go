//go:build deploy

package deploy

import (
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"github.com/selfheal/selfheal/internal/testenv"
)

// TestDebianPackage installs `make package`'s .deb on this machine with
// dpkg, checks what an operator relies on — the binary and its version,
// the units, the user, /etc/selfheal with the example configuration and a
// token only selfheal can read, a configuration check-config accepts —
// then removes and purges it, and checks that nothing of it is left but
// the user (kept, as Debian's policy asks; the test removes it after).
func TestDebianPackage(t *testing.T) {
	dpkg := testenv.Tool(t, "dpkg", true)
	if os.Geteuid() != 0 {
		t.Fatal("installing a package needs root")
	}
	version, err := os.ReadFile("../VERSION")
	if err != nil {
		t.Fatal(err)
	}
	debs, _ := filepath.Glob("../dist/selfheal_" + strings.TrimSpace(string(version)) + "_*.deb")
	if len(debs) != 1 {
		t.Fatalf("no .deb of version %s in dist/: run make package (make test-deploy does)", version)
	}
	if exec.Command("dpkg-query", "-W", "selfheal").Run() == nil {
		t.Fatal("a selfheal package is already installed here; the test will not replace it")
	}
	hadUser := exec.Command("getent", "passwd", "selfheal").Run() == nil
	run := func(name string, args ...string) string {
		t.Helper()
		out, err := exec.Command(name, args...).CombinedOutput()
		if err != nil {
			t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
		}
		return string(out)
	}
	t.Cleanup(func() {
		_ = exec.Command(dpkg, "-P", "selfheal").Run()
		if !hadUser {
			_ = exec.Command("userdel", "selfheal").Run()
			_ = exec.Command("groupdel", "selfheal").Run()
		}
	})

	out := run(dpkg, "-i", debs[0])
	if !strings.Contains(out, "systemctl enable --now selfheal") {
		t.Errorf("the install does not say what to do next:\n%s", out)
	}
	// make build stamps the version and the commit it was built from.
	rev := strings.TrimSpace(run("git", "rev-parse", "--short=12", "HEAD"))
	if v := run("/usr/bin/selfheal", "--version"); !strings.Contains(v, "version "+strings.TrimSpace(string(version))+" ") ||
		!strings.Contains(v, "revision: "+rev) {
		t.Errorf("selfheal --version: %s; want version %s and revision %s", v, version, rev)
	}
	if out := run("getent", "passwd", "selfheal"); !strings.Contains(out, ":/nonexistent:/usr/sbin/nologin") {
		t.Errorf("the selfheal user: %s", out)
	}
	for _, f := range []struct {
		path  string
		mode  os.FileMode
		owner string
	}{
		{"/etc/selfheal", os.ModeDir | 0o750, "root:selfheal"},
		{"/etc/selfheal/selfheal.yml", 0o640, "root:selfheal"},
		{"/etc/selfheal/token", 0o600, "selfheal:selfheal"},
		{"/lib/systemd/system/selfheal.service", 0o644, "root:root"},
		{"/lib/systemd/system/selfheal-exporter.service", 0o644, "root:root"},
		{"/usr/share/selfheal/systemd/gpu-root.conf", 0o644, "root:root"},
		{"/usr/share/selfheal/alerting/rules/services.yml", 0o644, "root:root"},
	} {
		fi, err := os.Stat(f.path)
		if err != nil {
			t.Errorf("%v", err)
			continue
		}
		if fi.Mode() != f.mode {
			t.Errorf("%s: mode %v, want %v", f.path, fi.Mode(), f.mode)
		}
		if got := strings.TrimSpace(run("stat", "-c", "%U:%G", f.path)); got != f.owner {
			t.Errorf("%s: owned by %s, want %s", f.path, got, f.owner)
		}
	}
	token, _ := os.ReadFile("/etc/selfheal/token")
	if !regexp.MustCompile(`^[0-9a-f]{64}$`).Match(token) {
		t.Errorf("the token is %d bytes, not 32 random bytes in hex", len(token))
	}
	// The configuration as installed loads, with the installed token, read
	// as the selfheal user would.
	check := exec.Command("/usr/bin/selfheal", "check-config", "--config.file=/etc/selfheal/selfheal.yml")
	check.SysProcAttr = &syscall.SysProcAttr{Credential: credentialOf(t, "selfheal")}
	if out, err := check.CombinedOutput(); err != nil {
		t.Errorf("check-config as selfheal: %v\n%s", err, out)
	}
	if analyze, err := exec.LookPath("systemd-analyze"); err == nil {
		if out, err := exec.Command(analyze, "verify", "/lib/systemd/system/selfheal.service").CombinedOutput(); err != nil {
			t.Errorf("systemd-analyze verify: %v\n%s", err, out)
		}
	}

	// Upgrade in place: the operator's configuration and token are kept.
	if err := os.WriteFile("/etc/selfheal/selfheal.yml", []byte("# edited\n"), 0o640); err != nil {
		t.Fatal(err)
	}
	run(dpkg, "-i", "--force-confold", debs[0])
	if b, _ := os.ReadFile("/etc/selfheal/selfheal.yml"); string(b) != "# edited\n" {
		t.Error("reinstalling replaced the operator's configuration")
	}
	if b, _ := os.ReadFile("/etc/selfheal/token"); string(b) != string(token) {
		t.Error("reinstalling replaced the token")
	}

	run(dpkg, "-r", "selfheal")
	for _, gone := range []string{"/usr/bin/selfheal", "/lib/systemd/system/selfheal.service", "/usr/share/selfheal"} {
		if _, err := os.Stat(gone); !os.IsNotExist(err) {
			t.Errorf("%s is still there after dpkg -r", gone)
		}
	}
	run(dpkg, "-P", "selfheal")
	if _, err := os.Stat("/etc/selfheal"); !os.IsNotExist(err) {
		t.Error("/etc/selfheal is still there after dpkg -P")
	}
	if out, _ := exec.Command("dpkg-query", "-W", "selfheal").CombinedOutput(); !strings.Contains(string(out), "no packages found") {
		t.Errorf("dpkg still knows selfheal: %s", out)
	}
}

func credentialOf(t *testing.T, user string) *syscall.Credential {
	t.Helper()
	var ids [2]uint32
	for i, flag := range []string{"-u", "-g"} {
		out, err := exec.Command("id", flag, user).Output()
		if err != nil {
			t.Fatal(err)
		}
		n, err := strconv.ParseUint(strings.TrimSpace(string(out)), 10, 32)
		if err != nil {
			t.Fatal(err)
		}
		ids[i] = uint32(n)
	}
	return &syscall.Credential{Uid: ids[0], Gid: ids[1]}
}
