package main

// --mount values, image references and the reference's switch lists
// (agent.forbidden_docker_args), for the docker argument policy.

import (
	"encoding/csv"
	"fmt"
	"strings"
)

// dockerMountSpec is a --mount value as docker reads it.
type dockerMountSpec struct {
	Type   string // bind, volume (docker's default), tmpfs, image, ...
	Source string
	Target string
	Keys   []string // every key given, lower case, in order
	Opts   map[string]string
}

// parseDockerMount reads "type=bind,source=/a,target=/b,readonly" the way
// docker does: CSV fields (quotes allowed), keys case-insensitive, the last
// of a repeated key wins.
func parseDockerMount(v string) (dockerMountSpec, error) {
	r := csv.NewReader(strings.NewReader(v))
	fields, err := r.Read()
	if err != nil {
		return dockerMountSpec{}, fmt.Errorf("not a --mount value: %v", err)
	}
	m := dockerMountSpec{Type: "volume", Opts: map[string]string{}}
	for _, f := range fields {
		key, val, hasVal := strings.Cut(f, "=")
		key = strings.ToLower(strings.TrimSpace(key))
		if !hasVal {
			val = "true" // readonly, ro, bind-nonrecursive...
		}
		m.Keys = append(m.Keys, key)
		m.Opts[key] = val
		switch key {
		case "type":
			m.Type = strings.ToLower(val)
		case "source", "src":
			m.Source = val
		case "target", "destination", "dst":
			m.Target = val
		}
	}
	return m, nil
}

// dockerMountKeys are the --mount keys the policy knows; others are refused.
var dockerMountKeys = map[string]bool{
	"type": true, "source": true, "src": true, "target": true, "destination": true, "dst": true,
	"readonly": true, "ro": true, "rw": true, "consistency": true, "bind-propagation": true,
	"bind-nonrecursive": true, "bind-recursive": true, "bind-create-src": true, "volume-nocopy": true,
	"volume-label": true, "volume-subpath": true, "tmpfs-size": true, "tmpfs-mode": true,
	"image-subpath": true, "relabel": true, "z": true, "Z": true,
	"tmpcopyup": true, "notmpcopyup": true, "size": true, "mode": true, "nosuid": true,
	"nodev": true, "noexec": true, "suid": true, "dev": true, "exec": true,
}

// checkMount checks a --mount value: a bind of an allowed host path, a
// plain named volume, a tmpfs or an image.
func (p *dockerArgPolicy) checkMount(v string) string {
	m, err := parseDockerMount(v)
	if err != nil {
		return err.Error()
	}
	for _, k := range m.Keys {
		switch {
		case k == "volume-driver" || k == "volume-opt":
			return "a volume driver option can mount any host folder"
		case k == "u" || k == "chown" || k == "idmap":
			return "it changes the owner of the host's files"
		case !dockerMountKeys[k]:
			return fmt.Sprintf("unknown --mount key %q", k)
		}
	}
	switch m.Type {
	case "bind":
		if !strings.HasPrefix(m.Source, "/") {
			return "a bind mount needs an absolute host path"
		}
		return p.checkHostPath(m.Source)
	case "volume":
		if m.Source == "" {
			return ""
		}
		return p.checkSource(m.Source, false)
	case "tmpfs", "image":
		return ""
	}
	return fmt.Sprintf("mount type %q is not allowed", m.Type)
}

// The docker reference grammar (github.com/distribution/reference):
// [domain[:port]/]path[:tag][@digest], path components lower case.
var dockerImageRefPattern = lazyRegexp(`^` +
	`(?:(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])(?:\.(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9]))*` +
	`(?::[0-9]+)?/|\[[a-fA-F0-9:]+\](?::[0-9]+)?/)?` + // domain
	`[a-z0-9]+(?:(?:[._]|__|[-]+)[a-z0-9]+)*(?:/[a-z0-9]+(?:(?:[._]|__|[-]+)[a-z0-9]+)*)*` + // path
	`(?::[\w][\w.-]{0,127})?` + // tag
	`(?:@[A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*:[0-9a-fA-F]{32,})?$`) // digest

var dockerImageIDPattern = lazyRegexp(`^(?:sha256:)?[0-9a-f]{64}$`)

// dockerImageRefError says why s is not exactly one image reference ("" when it is).
func dockerImageRefError(s string) string {
	switch {
	case s == "":
		return "an empty image name"
	case strings.ContainsAny(s, " \t\r\n"):
		return fmt.Sprintf("%q is not one image name: it holds spaces (container arguments go in the task's container arguments)", s)
	case strings.HasPrefix(s, "-"):
		return fmt.Sprintf("%q is not an image name: it starts with -", s)
	case dockerImageIDPattern().MatchString(s):
		return ""
	}
	// The length limit is on the name, without its tag and digest.
	name, _, _ := strings.Cut(s, "@")
	if k := strings.LastIndex(name, ":"); k > strings.LastIndex(name, "/") {
		name = name[:k]
	}
	if len(name) > 255 {
		return fmt.Sprintf("image name %.40q... is longer than 255 characters", s)
	}
	if !dockerImageRefPattern().MatchString(s) {
		return fmt.Sprintf("%q is not a valid image reference ([registry[:port]/]name[:tag][@digest], lower case)", s)
	}
	return ""
}

// dockerStripForbidden removes the options named in
// agent.forbidden_docker_args (names without dashes, long or one-letter,
// e.g. "entrypoint") with their values, from any arguments; it returns
// what it removed, as "--name", for the task log warning.
func dockerStripForbidden(args []string, forbidden []string) ([]string, []string) {
	if len(forbidden) == 0 {
		return args, nil
	}
	bad := map[string]bool{}
	for _, f := range forbidden {
		f = strings.TrimLeft(strings.TrimSpace(f), "-")
		if len(f) == 1 {
			if long, ok := dockerShortFlags[f[0]]; ok {
				f = long
			}
		}
		if alias, ok := dockerFlagAliases[f]; ok {
			f = alias
		}
		bad[f] = true
	}
	var kept, stripped []string
	seen := map[string]bool{}
	for _, o := range parseDockerOpts(args) {
		if o.Name != "" && bad[o.Name] {
			if !seen[o.Name] {
				seen[o.Name] = true
				stripped = append(stripped, "--"+o.Name)
			}
			continue
		}
		kept = append(kept, o.Tokens...)
	}
	return kept, stripped
}

// dockerOptsHaveHostNetwork: --network host (or --net=host) is among args.
func dockerOptsHaveHostNetwork(opts []dockerOpt) bool {
	for _, o := range opts {
		if o.Name == "network" && o.Err == "" && o.Value == "host" {
			return true
		}
	}
	return false
}
