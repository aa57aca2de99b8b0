package fakeserver

import (
	"bytes"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"strings"
	"time"
)

var b64 = base64.RawURLEncoding

// signJWT produces an HS256 token (§2.2; the agent never verifies it, we do).
func signJWT(key []byte, claims map[string]any) string {
	h, _ := json.Marshal(map[string]any{"alg": "HS256", "typ": "JWT"})
	var pb bytes.Buffer
	enc := json.NewEncoder(&pb)
	enc.SetEscapeHTML(false)
	_ = enc.Encode(claims)
	p := bytes.TrimRight(pb.Bytes(), "\n")
	signing := b64.EncodeToString(h) + "." + b64.EncodeToString(p)
	mac := hmac.New(sha256.New, key)
	mac.Write([]byte(signing))
	return signing + "." + b64.EncodeToString(mac.Sum(nil))
}

// parseJWT verifies signature and exp the way PyJWT does, returning its
// error texts as the "reason" of 401/30 (§2.3).
func parseJWT(key []byte, tok string, now time.Time) (map[string]any, *APIError) {
	bad := func(reason string) (map[string]any, *APIError) {
		return nil, errInvalidToken("invalid jwt token", kv{"reason", reason})
	}
	parts := strings.Split(tok, ".")
	if len(parts) != 3 {
		return bad("Not enough segments")
	}
	hb, err := b64.DecodeString(strings.TrimRight(parts[0], "="))
	if err != nil {
		return bad("Invalid header padding")
	}
	var hdr map[string]any
	if err := json.Unmarshal(hb, &hdr); err != nil {
		return bad("Invalid header string: " + err.Error())
	}
	pb, err := b64.DecodeString(strings.TrimRight(parts[1], "="))
	if err != nil {
		return bad("Invalid payload padding")
	}
	sig, err := b64.DecodeString(strings.TrimRight(parts[2], "="))
	if err != nil {
		return bad("Invalid crypto padding")
	}
	if alg, _ := hdr["alg"].(string); alg != "HS256" {
		return bad("The specified alg value is not allowed")
	}
	mac := hmac.New(sha256.New, key)
	mac.Write([]byte(parts[0] + "." + parts[1]))
	if !hmac.Equal(sig, mac.Sum(nil)) {
		return bad("Signature verification failed")
	}
	dec := json.NewDecoder(bytes.NewReader(pb))
	dec.UseNumber()
	var claims map[string]any
	if err := dec.Decode(&claims); err != nil || claims == nil {
		return bad("Invalid payload string: must be a json object")
	}
	if v, ok := claims["exp"]; ok {
		exp, ok := asInt(v)
		if !ok {
			return bad("Expiration Time claim (exp) must be an integer.")
		}
		if exp <= now.Unix() {
			return bad("Signature has expired")
		}
	}
	if v, ok := claims["iat"]; ok {
		iat, ok := asInt(v)
		if !ok {
			return bad("Issued At claim (iat) must be an integer.")
		}
		if iat > now.Unix() {
			return bad("The token is not yet valid (iat)")
		}
	}
	return claims, nil
}
