package fakeserver

import (
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"
)

// Roles of §2.6.
const (
	RoleSystem = "system"
	RoleRoot   = "root"
	RoleAdmin  = "admin"
	RoleUser   = "user"
	RoleGuest  = "guest"
)

// MaxTokenExpirationSec is max_expiration_sec of auth.login (§2.1).
const MaxTokenExpirationSec = 31536000

// User is a seeded or added user.
type User struct {
	ID      string
	Name    string
	Company string
	Role    string
}

// Credential is one access key of a user.
type Credential struct {
	Key          string
	Secret       string
	User         string
	Label        string
	LastUsed     time.Time
	LastUsedFrom string
}

// Identity is who a call runs as.
type Identity struct {
	User        string
	Company     string
	Role        string
	UserName    string
	CompanyName string
}

func init() {
	register("auth.login", "1.0", authLogin, "*")
	register("auth.logout", "2.2", authLogout, "*")
	register("auth.create_credentials", "1.0", authCreateCredentials, "*")
	register("auth.get_credentials", "1.0", authGetCredentials, "*")
	register("auth.revoke_credentials", "1.0", authRevokeCredentials, "*")
	register("auth.edit_credentials", "2.19", authEditCredentials, "*")
	// the auth service default is allow_roles [system, root] (§1.7)
	register("auth.get_token_for_user", "1.0", authGetTokenForUser, RoleSystem, RoleRoot)
}

// ---- test hooks ----

// AddCompany adds (or renames) a company.
func (s *Server) AddCompany(id, name string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.companies[id] = name
}

// AddUser adds or replaces a user. Company defaults to the seeded one,
// Role to "user", Name to the id.
func (s *Server) AddUser(u User) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if u.Company == "" {
		u.Company = DefaultCompanyID
	}
	if u.Role == "" {
		u.Role = RoleUser
	}
	if u.Name == "" {
		u.Name = u.ID
	}
	if _, ok := s.companies[u.Company]; !ok {
		s.companies[u.Company] = u.Company
	}
	s.users[u.ID] = &u
}

// AddCredentials gives userID the key/secret pair.
func (s *Server) AddCredentials(userID, key, secret string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.users[userID]; !ok {
		return fmt.Errorf("fakeserver: no user %q", userID)
	}
	s.creds[key] = &Credential{Key: key, Secret: secret, User: userID}
	return nil
}

// Credentials returns a copy of the credential for key.
func (s *Server) Credentials(key string) (Credential, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	c, ok := s.creds[key]
	if !ok {
		return Credential{}, false
	}
	return *c, true
}

// SetTokenLifetime sets the default lifetime of issued tokens (30 days).
func (s *Server) SetTokenLifetime(d time.Duration) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.tokenLifetime = d
}

// RevokeAllTokens revokes every token issued so far (401/30 "revoked token"),
// as after a key rotation; Basic credentials keep working.
func (s *Server) RevokeAllTokens() {
	s.mu.Lock()
	defer s.mu.Unlock()
	for id := range s.sessions {
		s.revoked[id] = true
	}
}

// IssueToken signs a token for userID valid for lifetime from the server
// clock; a negative lifetime gives an already expired token.
func (s *Server) IssueToken(userID string, lifetime time.Duration) (string, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	u, ok := s.users[userID]
	if !ok {
		return "", fmt.Errorf("fakeserver: no user %q", userID)
	}
	now := s.now()
	exp := now.Add(lifetime).Unix()
	return s.issueToken(s.identityOf(u), now, &exp), nil
}

// SignClaims signs arbitrary claims with the server key, for malformed-token tests.
func (s *Server) SignClaims(claims map[string]any) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return signJWT(s.jwtKey, claims)
}

// ---- internals ----

func (s *Server) identityOf(u *User) Identity {
	return Identity{User: u.ID, Company: u.Company, Role: u.Role, UserName: u.Name, CompanyName: s.companies[u.Company]}
}

// issueToken builds the claims of §2.2; exp nil means no expiry.
func (s *Server) issueToken(id Identity, now time.Time, exp *int64) string {
	sid := newID()
	s.sessions[sid] = true
	ident := map[string]any{}
	for k, v := range map[string]string{"user": id.User, "company": id.Company, "role": id.Role,
		"user_name": id.UserName, "company_name": id.CompanyName} {
		if v != "" { // only truthy properties are included
			ident[k] = v
		}
	}
	claims := map[string]any{
		"identity":       ident,
		"session_id":     sid,
		"env":            "<unknown>",
		"auth_type":      "Bearer",
		"iat":            now.Unix(),
		"api_version":    MaxAPIVersion,
		"server_version": ServerVersion,
		"server_build":   "fake",
		"feature_set":    "basic",
	}
	if exp != nil {
		claims["exp"] = *exp
	}
	return signJWT(s.jwtKey, claims)
}

// authenticate implements validate_auth (§2.3). Every endpoint here requires auth.
func (s *Server) authenticate(c *call) *APIError {
	authz := c.r.Header.Get("Authorization")
	if authz == "" { // the cookie is a fallback Bearer token (§1.3)
		if ck, err := c.r.Cookie(TokenCookie); err == nil && ck.Value != "" {
			authz = "Bearer " + ck.Value
		}
	}
	if authz == "" {
		return &APIError{Code: 401, Subcode: 20, Msg: msgNoCredentials}
	}
	typ, data, _ := strings.Cut(authz, " ")
	switch typ {
	case "Basic":
		raw, err := decodeB64Loose(data)
		if err != nil {
			return newErr(401, 21, msgBadCredentials, err.Error())
		}
		key, secret, _ := strings.Cut(string(raw), ":")
		cred, ok := s.creds[key]
		if !ok || cred.Secret != secret {
			return newErr(401, 22, msgInvalidCredentials, "failed to locate provided credentials")
		}
		u, ok := s.users[cred.User]
		if !ok {
			return newErr(401, 22, msgInvalidCredentials, "failed to locate provided credentials")
		}
		cred.LastUsed = c.now
		cred.LastUsedFrom = c.worker
		if cred.LastUsedFrom == "" {
			cred.LastUsedFrom = c.ip
		}
		c.ident = s.identityOf(u)
		return nil
	case "Bearer":
		claims, e := parseJWT(s.jwtKey, data, c.now)
		if e != nil {
			return e
		}
		ident, _ := claims["identity"].(map[string]any)
		if ident == nil || asString(ident["user"]) == "" {
			return errInvalidToken("failed parsing token", kv{"reason", "token missing identity"})
		}
		if sid := asString(claims["session_id"]); sid != "" && s.revoked[sid] {
			return errInvalidToken("revoked token")
		}
		c.ident = Identity{User: asString(ident["user"]), Company: asString(ident["company"]),
			Role: asString(ident["role"]), UserName: asString(ident["user_name"]),
			CompanyName: asString(ident["company_name"])}
		c.tokenSession = asString(claims["session_id"])
		return nil
	default:
		return &APIError{Code: 401, Subcode: 10, Msg: msgBadAuthType}
	}
}

// decodeB64Loose mimics Python's b64decode without validate: non-alphabet
// characters are dropped, padding must be right.
func decodeB64Loose(s string) ([]byte, error) {
	var b strings.Builder
	for _, r := range s {
		if r >= 'A' && r <= 'Z' || r >= 'a' && r <= 'z' || r >= '0' && r <= '9' || r == '+' || r == '/' || r == '=' {
			b.WriteRune(r)
		}
	}
	out, err := base64.StdEncoding.DecodeString(b.String())
	if err != nil {
		//lint:ignore ST1005 the real server's wording, shown to clients
		return nil, errors.New("Incorrect padding")
	}
	return out, nil
}

func checkRole(ep *endpointImpl, id Identity) *APIError {
	if len(ep.roles) == 0 || ep.roles[0] == "*" {
		return nil
	}
	for _, r := range ep.roles {
		if r == id.Role {
			return nil
		}
	}
	return newErr(403, 20, msgRoleNotAllowed, "", kv{"role", id.Role}, kv{"allowed", ep.roles})
}

// impersonate applies Impersonate-As / Act-As (§2.4).
func (s *Server) impersonate(c *call) (bool, *APIError) {
	imp := firstHeader(c.r.Header, "X-ClearML-Impersonate-As", "X-Trains-Impersonate-As")
	act := firstHeader(c.r.Header, "X-ClearML-Act-As", "X-Trains-Act-As")
	if imp == "" && act == "" {
		return false, nil
	}
	if imp != "" && act != "" {
		return false, newErr(400, 5, msgInvalidHeaders, "only one allowed",
			kv{"headers", []string{"X-ClearML-Impersonate-As", "X-ClearML-Act-As"}})
	}
	if r := c.ident.Role; r != RoleSystem && r != RoleRoot && r != RoleAdmin {
		return false, newErr(400, 6, msgImpersonation, "impersonation not allowed", kv{"role", r})
	}
	target := imp + act
	u, ok := s.users[target]
	if !ok || (c.ident.Role != RoleRoot && u.Company != c.ident.Company) {
		if c.ident.Role == RoleRoot {
			return false, newErr(400, 6, msgImpersonation, "unknown user", kv{"id", target})
		}
		return false, newErr(400, 6, msgImpersonation, "unknown user", kv{"id", target}, kv{"company", c.ident.Company})
	}
	caller := c.ident
	if act != "" {
		c.ident = Identity{User: u.ID, Company: u.Company, Role: caller.Role,
			UserName: fmt.Sprintf("%s (acting as %s)", caller.UserName, u.Name), CompanyName: s.companies[u.Company]}
	} else {
		c.ident = Identity{User: u.ID, Company: u.Company, Role: u.Role,
			UserName: fmt.Sprintf("%s (impersonated by %s)", u.Name, caller.UserName), CompanyName: s.companies[u.Company]}
	}
	return true, nil
}

// ---- endpoints ----

func (c *call) loginToken(id Identity) (string, error) {
	p := c.params()
	expSec, given := p.integer("expiration_sec", 0)
	if err := p.done(); err != nil {
		return "", err
	}
	if expSec > MaxTokenExpirationSec {
		return "", errValidation(fmt.Sprintf("error for field 'expiration_sec'. '%d' is bigger than maximum (%d).", expSec, MaxTokenExpirationSec))
	}
	var exp *int64
	switch {
	case given && expSec != 0:
		e := c.now.Unix() + expSec
		exp = &e
	case id.Role == RoleSystem: // no exp unless requested (§2.1)
	default:
		e := c.now.Add(c.s.tokenLifetime).Unix()
		exp = &e
	}
	tok := c.s.issueToken(id, c.now, exp)
	ck := &http.Cookie{Name: TokenCookie, Value: tok, Path: "/", HttpOnly: true}
	if exp != nil {
		ck.MaxAge = int(*exp - c.now.Unix())
		if ck.MaxAge <= 0 {
			ck.MaxAge = -1
		}
	}
	c.cookies = append(c.cookies, ck)
	return tok, nil
}

func authLogin(c *call) (map[string]any, error) {
	tok, err := c.loginToken(c.ident)
	if err != nil {
		return nil, err
	}
	return map[string]any{"token": tok}, nil
}

func authLogout(c *call) (map[string]any, error) {
	if c.tokenSession != "" {
		c.s.revoked[c.tokenSession] = true
	}
	c.cookies = append(c.cookies, &http.Cookie{Name: TokenCookie, Value: "", Path: "/", MaxAge: -1})
	return nil, nil
}

func authGetTokenForUser(c *call) (map[string]any, error) {
	p := c.params()
	uid := p.str("user", true)
	company := p.optStr("company", "")
	if err := p.done(); err != nil {
		return nil, err
	}
	u, ok := c.s.users[uid]
	if !ok || (company != "" && u.Company != company) {
		return nil, newErr(400, 301, "Invalid user id", "", kv{"id", uid})
	}
	tok, err := c.loginToken(c.s.identityOf(u))
	if err != nil {
		return nil, err
	}
	c.cookies = nil // only auth.login sets the cookie
	return map[string]any{"token": tok}, nil
}

const keyAlphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"

func randomKey(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	for i := range b {
		b[i] = keyAlphabet[int(b[i])%len(keyAlphabet)]
	}
	return string(b)
}

func randomSecret() string {
	b := make([]byte, 32)
	_, _ = rand.Read(b)
	return base64.RawURLEncoding.EncodeToString(b)
}

func authCreateCredentials(c *call) (map[string]any, error) {
	p := c.params()
	label := p.optStr("label", "")
	if err := p.done(); err != nil {
		return nil, err
	}
	cred := &Credential{Key: randomKey(30), Secret: randomSecret(), User: c.ident.User, Label: label}
	c.s.creds[cred.Key] = cred
	out := map[string]any{"access_key": cred.Key, "secret_key": cred.Secret}
	if label != "" {
		out["label"] = label
	}
	return map[string]any{"credentials": out}, nil
}

func authGetCredentials(c *call) (map[string]any, error) {
	var list []any
	for _, cr := range c.s.creds {
		if cr.User != c.ident.User {
			continue
		}
		e := map[string]any{"access_key": cr.Key}
		if cr.Label != "" {
			e["label"] = cr.Label
		}
		if !cr.LastUsed.IsZero() {
			e["last_used"] = dbTime(cr.LastUsed)
			e["last_used_from"] = cr.LastUsedFrom
		}
		list = append(list, e)
	}
	if list == nil {
		list = []any{}
	}
	return map[string]any{"credentials": list}, nil
}

func authRevokeCredentials(c *call) (map[string]any, error) {
	p := c.params()
	key := p.str("access_key", true)
	if err := p.done(); err != nil {
		return nil, err
	}
	n := 0
	if cr, ok := c.s.creds[key]; ok && cr.User == c.ident.User {
		delete(c.s.creds, key)
		n = 1
	}
	return map[string]any{"revoked": n}, nil
}

func authEditCredentials(c *call) (map[string]any, error) {
	p := c.params()
	key := p.str("access_key", true)
	label := p.optStr("label", "")
	if err := p.done(); err != nil {
		return nil, err
	}
	n := 0
	if cr, ok := c.s.creds[key]; ok && cr.User == c.ident.User {
		cr.Label = label
		n = 1
	}
	return map[string]any{"updated": n}, nil
}
