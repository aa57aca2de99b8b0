package main

// Secrets never go on a `docker run` (or `podman run`) command line: any
// user of the host reads every process's argv (ps, /proc/*/cmdline) for as
// long as the container runs. A secret variable is passed as `-e NAME`,
// which docker and podman fill from their own environment (readable only
// by the agent's user and root); the CLI reads some names itself
// (DOCKER_HOST, HTTP_PROXY...), and those go through an env file in the
// agent's private 0600 folder instead.

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
)

// dockerCLIReadsEnv: variables the docker or podman CLI itself acts on,
// which must not be set in its environment for the container's sake.
func dockerCLIReadsEnv(name string) bool {
	for _, p := range []string{"DOCKER_", "CONTAINERS_", "CONTAINER_", "BUILDAH_", "PODMAN_", "XDG_", "REGISTRY_AUTH"} {
		if strings.HasPrefix(name, p) {
			return true
		}
	}
	switch strings.ToUpper(name) {
	case "PATH", "HOME", "TMPDIR", "HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY", "ALL_PROXY", "SSL_CERT_FILE", "SSL_CERT_DIR", "TZ", "LANG":
		return true
	}
	return false
}

// dockerMoveSecrets rewrites a `docker run` / `podman run` argv so that no
// secret value is on it: each -e/--env NAME=VALUE (any spelling) whose
// NAME isSecret becomes "-e NAME" with NAME=VALUE in cliEnv, to append to
// the CLI's environment. A secret the CLI would act on goes to
// privateDir/secrets.env (0600, --env-file); privateDir must then be the
// agent's private folder. Only the options before the image are touched.
func dockerMoveSecrets(argv []string, isSecret func(string) bool, privateDir string) (out, cliEnv []string, err error) {
	start := 0
	for i, a := range argv {
		if a == "run" || a == "create" {
			start = i + 1
			break
		}
	}
	if start == 0 {
		return argv, nil, fmt.Errorf("not a docker run command line")
	}
	opts, image := parseDockerOptsUntil(argv[start:], true)
	out = append(out, argv[:start]...)
	var envFile []string
	secret := func(o dockerOpt) bool {
		name, _, hasValue := strings.Cut(o.Value, "=")
		return o.Name == "env" && o.Err == "" && hasValue && isSecret(name)
	}
	for i := 0; i < len(opts); i++ {
		o := opts[i]
		if n := o.ClusterLen; n > 1 && !slices.ContainsFunc(opts[i:i+n], secret) {
			out = append(out, o.Cluster...) // "-it" as written
			i += n - 1
			continue
		}
		if !secret(o) {
			out = append(out, o.Tokens...)
			continue
		}
		name, value, _ := strings.Cut(o.Value, "=")
		if dockerCLIReadsEnv(name) {
			if strings.ContainsAny(value, "\n\r\x00") {
				return argv, nil, fmt.Errorf("the value of %s holds a line break, which an env file cannot carry", name)
			}
			envFile = append(envFile, name+"="+value)
			continue
		}
		out = append(out, "-e", name)
		cliEnv = append(cliEnv, name+"="+value)
	}
	if len(envFile) > 0 {
		if privateDir == "" {
			return argv, nil, fmt.Errorf("secret variables the docker CLI reads itself need a private folder for an env file")
		}
		p := filepath.Join(privateDir, "secrets.env")
		if err := os.WriteFile(p, []byte(strings.Join(envFile, "\n")+"\n"), 0o600); err != nil {
			return argv, nil, err
		}
		out = append(out, "--env-file", p)
	}
	out = append(out, argv[start+image:]...)
	return out, cliEnv, nil
}

// dockerArgvLeaks lists the argv elements that contain one of the secret
// values (empty and very short values are not searched): a last check
// before a command line is started.
func dockerArgvLeaks(argv []string, secrets []string) []string {
	var out []string
	for _, a := range argv {
		for _, s := range secrets {
			if len(s) >= 4 && strings.Contains(a, s) {
				out = append(out, a)
				break
			}
		}
	}
	return out
}
