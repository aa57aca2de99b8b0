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

// dockerHiddenNames are the variables whose values are secret in a
// docker command: the reference's list, agent.hide_docker_command_env_vars.extra_keys,
// the names in CLEARML_AGENT_DOCKER_ARGS_HIDE_ENV, and any name that looks secret.
func dockerHiddenNames(cfg *agentConfig) func(string) bool {
	keys := map[string]bool{}
	for _, k := range secretEnvVars {
		keys[k] = true
	}
	for _, k := range cfg.strList("agent.hide_docker_command_env_vars.extra_keys") {
		keys[k] = true
	}
	for _, k := range shellSplitLoose(firstEnv(cfg.env, "CLEARML_AGENT_DOCKER_ARGS_HIDE_ENV")) {
		keys[k] = true
	}
	return func(name string) bool { return keys[name] || looksSecretName(name) }
}

// dockerEmbeddedURLs (agent.hide_docker_command_env_vars.parse_embedded_urls)
// makes the password of a scheme://user:password@ URL in a value secret.
func dockerEmbeddedURLs(cfg *agentConfig) bool {
	return cfg.boolean("agent.hide_docker_command_env_vars.parse_embedded_urls", true)
}

// secretsOff takes the secret values off the argv (dockerMoveSecrets):
// the hidden names, and with parse_embedded_urls any variable whose value
// holds a URL with a password. Then no known secret may be left on it:
// rather not start than leak.
func (b *dockerBuild) secretsOff(argv []string) error {
	hidden := dockerHiddenNames(b.cfg)
	withURLPassword := map[string]bool{}
	if dockerEmbeddedURLs(b.cfg) {
		opts, _ := parseDockerOptsUntil(argv[2:], true)
		for _, o := range opts {
			if name, value, ok := strings.Cut(o.Value, "="); o.Name == "env" && ok && urlPasswordPattern().MatchString(value) {
				withURLPassword[name] = true
			}
		}
	}
	isSecret := func(n string) bool { return hidden(n) || withURLPassword[n] }
	out, cliEnv, err := dockerMoveSecrets(argv, isSecret, b.tmp)
	if err != nil {
		return err
	}
	creds := gitCredentialsFrom(b.cfg, b.o.task.gitUser, b.o.task.gitPass)
	secrets := []string{b.cfg.str("api.credentials.secret_key"), creds.pass, firstEnv(b.cfg.env, "CLEARML_AUTH_TOKEN")}
	for _, kv := range cliEnv {
		_, v, _ := strings.Cut(kv, "=")
		secrets = append(secrets, v)
	}
	if leaks := dockerArgvLeaks(out, secrets); len(leaks) > 0 {
		return fmt.Errorf("not starting the container: a secret value would be on the %s command line (in %q); pass it with -e NAME=VALUE in the container arguments, under a name agent.hide_docker_command_env_vars.extra_keys lists",
			b.run.engine, dockerMaskArgs(leaks, isSecret, true, secrets))
	}
	b.run.argv, b.run.cliEnv = out, cliEnv
	return nil
}

// dockerMaskArgs is an argv as shown: the values of hidden variables,
// known secret values and (urls) the passwords of URLs replaced by ********.
func dockerMaskArgs(argv []string, hidden func(string) bool, urls bool, secrets []string) []string {
	red := newRedactor(secrets...)
	out := make([]string, len(argv))
	envNext := false
	for i, a := range argv {
		kv, prefix := "", ""
		switch {
		case envNext:
			kv = a
		case strings.HasPrefix(a, "--env="):
			kv, prefix = a[len("--env="):], "--env="
		case strings.HasPrefix(a, "-e="):
			kv, prefix = a[3:], "-e="
		case strings.HasPrefix(a, "-e") && len(a) > 2:
			kv, prefix = a[2:], "-e"
		}
		envNext = a == "-e" || a == "--env"
		name, value, isKV := strings.Cut(kv, "=")
		switch {
		case isKV && hidden(name):
			out[i] = prefix + name + "=" + mask
		case isKV && urls:
			out[i] = prefix + name + "=" + maskURLPasswordsInText(value)
		case urls && !strings.HasPrefix(a, "-"):
			out[i] = maskURLPasswordsInText(a)
		default:
			out[i] = a
		}
		out[i] = red.redact(out[i])
	}
	return out
}
