package main

import (
	"fmt"
	"strings"
	"testing"
)

func TestSecretEnvValues(t *testing.T) {
	got := secretEnvValues([]string{
		"DB_PASSWORD=longpassword", "GITHUB_TOKEN=ghp_xxxxxx", "MY_SECRET_THING=abcdefg",
		"SSH_PRIVATE_KEY=keykeykey", "AZURE_STORAGE_KEY=azazazaz", "CLEARML_AGENT_GIT_PASS=gitgitgit",
		"PATH=/usr/bin:/bin", "HOME=/home/user", "SHORT_TOKEN=abc", "FLAG_KEY=false", "NOEQUALS",
		"TOKENIZERS_PARALLELISM=false",
	})
	want := []string{"longpassword", "ghp_xxxxxx", "abcdefg", "keykeykey", "azazazaz", "gitgitgit"}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("secretEnvValues = %q, want %q", got, want)
	}
}

// TestLooksSecretName: the one secret-name rule is the union of the two
// that existed before, the console's (secretEnvValues: known names and
// *_SECRET*, SECRET*, *_PASSWORD, *_PASS, *_PASSWD, *_TOKEN, *_KEY,
// *_CONNECTION_STRING) and docker's (maskDockerArgs: secret, pass, token,
// account_key, api_key, private_key anywhere), so neither masks less.
func TestLooksSecretName(t *testing.T) {
	for _, tc := range []struct {
		name string
		want bool
	}{
		// The console's old rule.
		{"CLEARML_API_SECRET_KEY", true},
		{"AZURE_STORAGE_KEY", true},
		{"CLEARML_AUTH_TOKEN", true},
		{"MY_SECRET_THING", true},
		{"SECRETS_FILE", true},
		{"DB_PASSWORD", true},
		{"FTP_PASS", true},
		{"LDAP_PASSWD", true},
		{"GITHUB_TOKEN", true},
		{"SORT_KEY", true},
		{"db_connection_string", true},
		{"AZURE_STORAGE_CONNECTION_STRING", true},
		// Docker's old rule.
		{"clientSecret", true},
		{"PASSPHRASE", true},
		{"mypassword", true},
		{"TOKENIZERS_PARALLELISM", true},
		{"STORAGE_ACCOUNT_KEY_ID", true},
		{"OPENAI_API_KEY_FILE", true},
		{"private_key_path", true},
		// Neither.
		{"PATH", false},
		{"HOME", false},
		{"KEYBOARD", false},
		{"MONKEY", false},
		{"KEY", false},
		{"KEY_ID", false},
		{"CONNECTION_STRING_FORMAT", false},
		{"CLEARML_TASK_ID", false},
		{"PLAIN", false},
	} {
		if got := looksSecretName(tc.name); got != tc.want {
			t.Errorf("looksSecretName(%q) = %v, want %v", tc.name, got, tc.want)
		}
	}
}

// TestMaskURLPasswords: one URL-password pattern, applied two ways.
// maskURLPasswords (config, docker and git output) rejoins the fields of a
// string it changed; maskURLPasswordsInText (the console) keeps the text.
func TestMaskURLPasswords(t *testing.T) {
	for _, tc := range []struct{ in, fields, text string }{
		// The old token rule: a URL at the start of a whitespace field.
		{"git clone https://u:p@host/x.git", "git clone https://u:********@host/x.git", ""},
		{"https://user:pa:ss@h/x@y", "https://user:********@h/x@y", ""},
		{"ssh://:secret@h", "ssh://:********@h", ""},
		{"a  https://u:p@h  b", "a https://u:********@h b", "a  https://u:********@h  b"},
		// The old console rule: anywhere in text, several per field.
		{"--index-url=https://u:p@h/simple", "--index-url=https://u:********@h/simple", ""},
		{`url="https://u:p@h"`, `url="https://u:********@h"`, ""},
		{"x://a:b@h,y://c:d@h", "x://a:********@h,y://c:********@h", ""},
		{"line1\nclone\thttps://u:p@h\n", "line1 clone https://u:********@h", "line1\nclone\thttps://u:********@h\n"},
		// Not a URL password.
		{"user@example.com", "user@example.com", ""},
		{"https://user@host/x  y", "https://user@host/x  y", ""},
		{"https://host/a:b@c", "https://host/a:b@c", ""},
		{"git@github.com:org/repo.git", "git@github.com:org/repo.git", ""},
		{"https://u:@h", "https://u:@h", ""},
		{"  spaced   text  ", "  spaced   text  ", ""},
	} {
		text := tc.text
		if text == "" {
			text = tc.fields
		}
		if got := maskURLPasswords(tc.in); got != tc.fields {
			t.Errorf("maskURLPasswords(%q) = %q, want %q", tc.in, got, tc.fields)
		}
		if got := maskURLPasswordsInText(tc.in); got != text {
			t.Errorf("maskURLPasswordsInText(%q) = %q, want %q", tc.in, got, text)
		}
		if strings.Contains(tc.in, ":p@") && strings.Contains(maskURLPasswordsInText(tc.in), ":p@") {
			t.Errorf("%q: password shown", tc.in)
		}
	}
}
