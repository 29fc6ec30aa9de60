package e2e

import (
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// TestUserCommands drives `appliance user add|passwd|rm|ls` against a running
// appliance, with credentials from --password-stdin and from the
// APPLIANCE_USERNAME/APPLIANCE_PASSWORD variables, and checks that each
// change is real by logging in with the new credentials.
func TestUserCommands(t *testing.T) {
	t.Parallel()
	a := startAppliance(t, t.TempDir())
	adminFlags := []string{"--username", "admin", "--password-stdin"}
	stdin := a.password + "\n"

	out, err := a.cli(stdin, append([]string{"user", "add", "builder", "--role", "developer"}, adminFlags...)...)
	mustOK(t, "user add with a generated password", out, err)
	m := regexp.MustCompile(`password: (\S+)`).FindStringSubmatch(out)
	if m == nil {
		t.Fatalf("user add printed no generated password:\n%s", out)
	}
	generated := m[1]
	if code, _, _ := status(t, a, "GET", "/api/v1/whoami", "builder", generated); code != 200 {
		t.Fatalf("generated password does not log in: %d", code)
	}

	out, err = a.cli(stdin, append([]string{"user", "ls"}, adminFlags...)...)
	mustOK(t, "user ls", out, err)
	if !regexp.MustCompile(`(?m)^admin\s+admin\s`).MatchString(out) || !regexp.MustCompile(`(?m)^builder\s+developer\s`).MatchString(out) {
		t.Fatalf("user ls output:\n%s", out)
	}

	pw := filepath.Join(t.TempDir(), "pw")
	if err := os.WriteFile(pw, []byte("a-new-password-42\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	// Credentials from the environment instead of flags.
	out, err = a.cliEnv([]string{"APPLIANCE_USERNAME=admin", "APPLIANCE_PASSWORD=" + a.password}, "", "user", "passwd", "builder", "--new-password-file", pw)
	mustOK(t, "user passwd with credentials from the environment", out, err)
	if code, _, _ := status(t, a, "GET", "/api/v1/whoami", "builder", generated); code != 401 {
		t.Fatalf("old password still works after passwd: %d", code)
	}
	if code, _, _ := status(t, a, "GET", "/api/v1/whoami", "builder", "a-new-password-42"); code != 200 {
		t.Fatalf("new password does not work: %d", code)
	}

	out, err = a.cli(stdin, append([]string{"user", "rm", "builder"}, adminFlags...)...)
	mustOK(t, "user rm", out, err)
	if code, _, _ := status(t, a, "GET", "/api/v1/whoami", "builder", "a-new-password-42"); code != 401 {
		t.Fatalf("removed user still logs in: %d", code)
	}

	// Clear errors.
	for _, tc := range []struct {
		name  string
		stdin string
		args  []string
		want  string
	}{
		{"no credentials", "", []string{"user", "ls"}, "give credentials with --username"},
		{"wrong password", "not-the-password\n", append([]string{"user", "ls"}, adminFlags...), "invalid username or password"},
		{"password-stdin without username", "x\n", []string{"user", "ls", "--password-stdin"}, "--password-stdin needs --username"},
		{"weak password", stdin, append([]string{"user", "add", "weak", "--new-password-file", writeTemp(t, "short\n")}, adminFlags...), "at least 12 characters"},
		{"last admin", stdin, append([]string{"user", "rm", "admin"}, adminFlags...), "last admin"},
		{"unknown user", stdin, append([]string{"user", "rm", "nobody"}, adminFlags...), "no such user"},
		{"unreachable server", stdin, append([]string{"user", "ls", "--server", "https://127.0.0.1:1"}, adminFlags...), "cannot reach the appliance"},
	} {
		out, err := a.cli(tc.stdin, tc.args...)
		if err == nil || !strings.Contains(out, tc.want) {
			t.Errorf("%s: err=%v, output lacks %q:\n%s", tc.name, err, tc.want, out)
		}
	}
}

func writeTemp(t *testing.T, content string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "f")
	if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}
