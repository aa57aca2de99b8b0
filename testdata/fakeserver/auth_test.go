package fakeserver

import (
	"encoding/base64"
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"
)

func decodeClaims(t *testing.T, tok string) map[string]any {
	t.Helper()
	parts := strings.Split(tok, ".")
	if len(parts) != 3 {
		t.Fatalf("token %q", tok)
	}
	raw, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	if err := json.Unmarshal(raw, &m); err != nil {
		t.Fatal(err)
	}
	return m
}

func TestLogin(t *testing.T) {
	s, c := startServer(t)
	now := time.Date(2025, 1, 2, 3, 4, 5, 0, time.UTC)
	s.SetNow(now)
	r := c.get("/auth.login", nil)
	if r.Status != 200 {
		t.Fatal(string(r.Raw))
	}
	tok := asString(r.Data["token"])
	cl := decodeClaims(t, tok)
	id := cl["identity"].(map[string]any)
	if id["user"] != TestsUserID || id["company"] != DefaultCompanyID || id["role"] != "user" ||
		id["user_name"] != "tests" || id["company_name"] != "clearml" {
		t.Errorf("identity %v", id)
	}
	if cl["api_version"] != "2.31" || cl["feature_set"] != "basic" || cl["auth_type"] != "Bearer" ||
		cl["server_version"] == nil || !hex32.MatchString(asString(cl["session_id"])) || cl["env"] == nil {
		t.Errorf("claims %v", cl)
	}
	if int64(cl["iat"].(float64)) != now.Unix() || int64(cl["exp"].(float64)) != now.Unix()+30*24*3600 {
		t.Errorf("iat/exp %v %v", cl["iat"], cl["exp"])
	}
	var ck *http.Cookie
	for _, x := range (&http.Response{Header: r.Header}).Cookies() {
		if x.Name == TokenCookie {
			ck = x
		}
	}
	if ck == nil || ck.Value != tok {
		t.Errorf("cookie: %v", r.Header)
	}
	// expiration_sec in the query (as the agent sends it) or body
	tok2 := asString(c.ok("/auth.login?expiration_sec=100", nil)["token"])
	if int64(decodeClaims(t, tok2)["exp"].(float64)) != now.Unix()+100 {
		t.Error("expiration_sec query")
	}
	tok3 := asString(c.ok("/auth.login", map[string]any{"expiration_sec": 31536000})["token"])
	if int64(decodeClaims(t, tok3)["exp"].(float64)) != now.Unix()+31536000 {
		t.Error("expiration_sec body")
	}
	// Bearer re-issues for the same identity
	c.token = tok
	tok4 := asString(c.ok("/auth.login", nil)["token"])
	if decodeClaims(t, tok4)["identity"].(map[string]any)["user"] != TestsUserID {
		t.Error("bearer login")
	}
	// the token works on other endpoints; Basic works everywhere too
	c.ok("/v2.5/queues.get_default", nil)
	c.token = ""
	c.ok("/v2.5/queues.get_default", nil)
	// cookie fallback when no Authorization header
	c.ok("/v2.5/queues.get_default", nil, noAuth(), withHeader("Cookie", TokenCookie+"="+tok))
	// token lifetime
	s.SetTokenLifetime(time.Hour)
	if int64(decodeClaims(t, c.login())["exp"].(float64)) != now.Unix()+3600 {
		t.Error("SetTokenLifetime")
	}
}

func TestAuthFailures(t *testing.T) {
	s, c := startServer(t)
	s.SetNow(time.Date(2025, 1, 2, 3, 4, 5, 0, time.UTC))
	valid, err := s.IssueToken(TestsUserID, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	expired, _ := s.IssueToken(TestsUserID, -time.Second)
	parts := strings.Split(valid, ".")
	badSig := parts[0] + "." + parts[1] + "." + base64.RawURLEncoding.EncodeToString([]byte("nope"))
	noIdentity := s.SignClaims(map[string]any{"iat": 1, "exp": 4102444800})
	cases := []struct {
		name      string
		auth      string
		code, sub int
		msg       string
	}{
		{"missing", "", 401, 20, "Unauthorized (missing credentials)"},
		{"scheme", "Digest abc", 401, 10, "Unauthorized (bad authentication header type)"},
		{"lowercase basic", "basic " + base64.StdEncoding.EncodeToString([]byte(TestsAccessKey+":"+TestsSecretKey)), 401, 10, "Unauthorized (bad authentication header type)"},
		{"malformed basic", "Basic abc", 401, 21, "Unauthorized (malformed credentials) (Incorrect padding)"},
		{"unknown key", basicAuth("NOPE", "x"), 401, 22, "Unauthorized (invalid credentials) (failed to locate provided credentials)"},
		{"wrong secret", basicAuth(TestsAccessKey, "x"), 401, 22, "Unauthorized (invalid credentials) (failed to locate provided credentials)"},
		{"expired", "Bearer " + expired, 401, 30, "Invalid token (invalid jwt token): reason=Signature has expired"},
		{"bad signature", "Bearer " + badSig, 401, 30, "Invalid token (invalid jwt token): reason=Signature verification failed"},
		{"garbage", "Bearer abc", 401, 30, "Invalid token (invalid jwt token): reason=Not enough segments"},
		{"no identity", "Bearer " + noIdentity, 401, 30, "Invalid token (failed parsing token): reason=token missing identity"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			opts := []reqOpt{noAuth()}
			if tc.auth != "" {
				opts = []reqOpt{withHeader("Authorization", tc.auth)}
			}
			for _, p := range []string{"/auth.login", "/v2.5/tasks.get_all"} {
				c.expectErr(p, nil, tc.code, tc.sub, tc.msg, opts...)
			}
		})
	}
	// endpoint resolution happens before auth
	c.expectErr("/users.get_vaults", nil, 404, 0, "", noAuth())
	// the token signed by the server is accepted
	c.ok("/v2.5/tasks.get_all", nil, withHeader("Authorization", "Bearer "+valid))
}

func TestTokenExpiryAndRevocation(t *testing.T) {
	s, c := startServer(t)
	s.SetNow(time.Date(2025, 1, 2, 3, 4, 5, 0, time.UTC))
	c.token = asString(c.ok("/auth.login?expiration_sec=60", nil)["token"])
	c.ok("/v2.5/queues.get_default", nil)
	s.Advance(61 * time.Second)
	c.expectErr("/v2.5/queues.get_default", nil, 401, 30, "Invalid token (invalid jwt token): reason=Signature has expired")

	// rotation: every issued token is revoked, Basic still works
	c.token = ""
	c.token = c.login()
	other := c.login()
	s.RevokeAllTokens()
	c.expectErr("/v2.5/queues.get_default", nil, 401, 30, "Invalid token (revoked token)")
	c.expectErr("/v2.5/queues.get_default", nil, 401, 30, "Invalid token (revoked token)", withHeader("Authorization", "Bearer "+other))
	c.token = ""
	fresh := c.login() // tokens issued after the rotation work
	c.ok("/v2.5/queues.get_default", nil, withHeader("Authorization", "Bearer "+fresh))

	// logout revokes the calling token
	c.token = fresh
	c.ok("/auth.logout", nil)
	c.expectErr("/v2.5/queues.get_default", nil, 401, 30, "Invalid token (revoked token)")
	c.expectErr("/v2.1/auth.logout", nil, 404, 0, "Unable to find endpoint for name auth.logout and version 2.1")
}

func TestRolesUsersAndImpersonation(t *testing.T) {
	s, c := startServer(t)
	c.expectErr("/auth.get_token_for_user", map[string]any{"user": TestsUserID}, 403, 20,
		"Forbidden (not allowed for role): role=user, allowed=(system, root)")

	s.AddUser(User{ID: "admin1", Name: "Admin", Role: RoleAdmin})
	s.AddUser(User{ID: "bob", Name: "Bob"})
	if err := s.AddCredentials("admin1", "ADMINKEY", "adminsecret"); err != nil {
		t.Fatal(err)
	}
	if err := s.AddCredentials("nobody", "K", "S"); err == nil {
		t.Error("credentials for unknown user")
	}
	admin := withHeader("Authorization", basicAuth("ADMINKEY", "adminsecret"))
	tok := asString(c.ok("/auth.login", nil, admin)["token"])
	if decodeClaims(t, tok)["identity"].(map[string]any)["role"] != "admin" {
		t.Error("admin role")
	}
	// impersonation gives a token of the target user with the target's role
	tok = asString(c.ok("/auth.login", nil, admin, withHeader("X-ClearML-Impersonate-As", "bob"))["token"])
	id := decodeClaims(t, tok)["identity"].(map[string]any)
	if id["user"] != "bob" || id["role"] != "user" {
		t.Errorf("impersonated identity %v", id)
	}
	c.expectErr("/auth.login", nil, 400, 6, "Impersonation error (impersonation not allowed): role=user",
		withHeader("X-ClearML-Impersonate-As", "bob"))
	c.expectErr("/auth.login", nil, 400, 5, "", admin, withHeader("X-ClearML-Impersonate-As", "bob"),
		withHeader("X-ClearML-Act-As", "bob"))
	c.expectErr("/auth.login", nil, 400, 6, "", admin, withHeader("X-ClearML-Act-As", "ghost"))

	// credentials endpoints and last_used bookkeeping
	cr := c.ok("/auth.create_credentials", map[string]any{"label": "ci"})["credentials"].(map[string]any)
	key, secret := asString(cr["access_key"]), asString(cr["secret_key"])
	if len(key) != 30 || strings.ToUpper(key) != key || secret == "" || cr["label"] != "ci" {
		t.Errorf("create_credentials %v", cr)
	}
	c.ok("/auth.login", nil, withHeader("Authorization", basicAuth(key, secret)), withHeader("X-ClearML-Worker", "host1"))
	if got, _ := s.Credentials(key); got.LastUsedFrom != "host1" || got.LastUsed.IsZero() {
		t.Errorf("last used %+v", got)
	}
	list := c.ok("/auth.get_credentials", nil)["credentials"].([]any)
	if len(list) != 2 {
		t.Errorf("get_credentials %v", list)
	}
	if n := num(c.ok("/auth.revoke_credentials", map[string]any{"access_key": key})["revoked"]); n != 1 {
		t.Error("revoke_credentials")
	}
	c.expectErr("/auth.login", nil, 401, 22, "", withHeader("Authorization", basicAuth(key, secret)))
}
