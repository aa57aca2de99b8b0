package main

// Published ports (-p/--publish), as the reference's resolve_port_mapping:
// host ports must lie in agent.docker_args_allowed_port_range and be free,
// else they move to a free consecutive block (in the range, or in
// 10000-60000 without one). The task then learns the host's address
// (CLEARML_AGENT_HOST_IP) and the mapping (the runtime property
// _external_host_tcp_port_mapping). With --network host nothing is published.

import (
	"fmt"
	"net"
	"strconv"
	"strings"
)

// dockerPortSpec is one -p value: [ip:][hostPorts:]containerPorts[/proto].
type dockerPortSpec struct {
	IP             string // "" or an address ("[::1]" keeps its brackets)
	HostLo, HostHi int    // 0, 0: docker picks a host port
	CtrLo, CtrHi   int
	Proto          string // "" is tcp
}

// parseDockerPublish reads a -p value.
func parseDockerPublish(v string) (dockerPortSpec, error) {
	var s dockerPortSpec
	rest, proto, _ := strings.Cut(v, "/")
	s.Proto = strings.ToLower(proto)
	if s.Proto != "" && s.Proto != "tcp" && s.Proto != "udp" && s.Proto != "sctp" {
		return s, fmt.Errorf("unknown protocol %q in -p %s", proto, v)
	}
	if strings.HasPrefix(rest, "[") { // [ipv6]:host:container
		end := strings.Index(rest, "]:")
		if end < 0 {
			return s, fmt.Errorf("bad address in -p %s", v)
		}
		s.IP, rest = rest[:end+1], rest[end+2:]
	}
	parts := strings.Split(rest, ":")
	if s.IP == "" && len(parts) == 3 {
		s.IP, parts = parts[0], parts[1:]
	}
	var err error
	switch len(parts) {
	case 1:
		s.CtrLo, s.CtrHi, err = dockerPortRange(parts[0])
	case 2:
		if parts[0] != "" {
			if s.HostLo, s.HostHi, err = dockerPortRange(parts[0]); err != nil {
				return s, fmt.Errorf("-p %s: %v", v, err)
			}
		}
		s.CtrLo, s.CtrHi, err = dockerPortRange(parts[1])
	default:
		return s, fmt.Errorf("not a port mapping: -p %s", v)
	}
	if err != nil {
		return s, fmt.Errorf("-p %s: %v", v, err)
	}
	if s.HostLo != 0 && s.HostHi-s.HostLo != s.CtrHi-s.CtrLo && s.CtrHi != s.CtrLo {
		return s, fmt.Errorf("-p %s: the host and container port ranges differ in size", v)
	}
	return s, nil
}

// dockerPortRange reads "80" or "8000-8010".
func dockerPortRange(s string) (int, int, error) {
	lo, hi, isRange := strings.Cut(s, "-")
	a, err := strconv.Atoi(lo)
	if err != nil || a < 1 || a > 65535 {
		return 0, 0, fmt.Errorf("bad port %q", s)
	}
	b := a
	if isRange {
		if b, err = strconv.Atoi(hi); err != nil || b < a || b > 65535 {
			return 0, 0, fmt.Errorf("bad port range %q", s)
		}
	}
	return a, b, nil
}

func dockerPortText(lo, hi int) string {
	if lo == hi {
		return strconv.Itoa(lo)
	}
	return fmt.Sprintf("%d-%d", lo, hi)
}

// String writes the spec back in docker's syntax.
func (s dockerPortSpec) String() string {
	out := dockerPortText(s.CtrLo, s.CtrHi)
	if s.HostLo != 0 {
		out = dockerPortText(s.HostLo, s.HostHi) + ":" + out
	} else if s.IP != "" {
		out = ":" + out
	}
	if s.IP != "" {
		out = s.IP + ":" + out
	}
	if s.Proto != "" {
		out += "/" + s.Proto
	}
	return out
}

// mapping is the runtime property's "host:container" (no address, no protocol).
func (s dockerPortSpec) mapping() string {
	if s.HostLo == 0 {
		return dockerPortText(s.CtrLo, s.CtrHi)
	}
	return dockerPortText(s.HostLo, s.HostHi) + ":" + dockerPortText(s.CtrLo, s.CtrHi)
}

// dockerPortPolicy is agent.docker_args_allowed_port_range and what is in use.
type dockerPortPolicy struct {
	Lo, Hi int                               // allowed host ports, inclusive; 0, 0: any
	InUse  func(proto string, port int) bool // a host port already taken
}

// The reference moves ports here when no range is configured.
const dockerRemapLo, dockerRemapHi = 10000, 60000

// dockerRemapPorts checks the -p options of args and moves host ports that
// are outside the allowed range or taken. It returns the new arguments,
// the runtime mapping ("" when nothing is published or the network is the
// host's), and one log line per moved or refused mapping. A mapping that
// cannot be placed is dropped (refused), not run outside the range.
func dockerRemapPorts(args []string, p dockerPortPolicy) ([]string, string, []string) {
	opts := parseDockerOpts(args)
	if dockerOptsHaveHostNetwork(opts) {
		return args, "", nil
	}
	taken := map[string]bool{}
	used := func(proto string, port int) bool {
		return taken[proto+strconv.Itoa(port)] || p.InUse != nil && p.InUse(proto, port)
	}
	var out, mappings, log []string
	for _, o := range opts {
		if o.Name != "publish" || o.Err != "" {
			out = append(out, o.Tokens...)
			continue
		}
		spec, err := parseDockerPublish(o.Value)
		if err != nil {
			log = append(log, "clearml-agent: refused docker argument "+strings.Join(o.Tokens, " ")+": "+err.Error())
			continue
		}
		proto := spec.Proto
		if proto == "" {
			proto = "tcp"
		}
		moved, ok := dockerPlacePorts(&spec, proto, p, used)
		if !ok {
			log = append(log, fmt.Sprintf("clearml-agent: refused docker argument %s: no %d free consecutive host port(s) in %d-%d (agent.docker_args_allowed_port_range)",
				strings.Join(o.Tokens, " "), spec.CtrHi-spec.CtrLo+1, max(p.Lo, 1), dockerRangeHi(p)))
			continue
		}
		for port := spec.HostLo; port <= spec.HostHi && port > 0; port++ {
			taken[proto+strconv.Itoa(port)] = true
		}
		if moved {
			log = append(log, fmt.Sprintf("clearml-agent: docker argument %s: host port(s) moved to %s", strings.Join(o.Tokens, " "), spec.String()))
			out = append(out, "--publish="+spec.String())
		} else {
			out = append(out, o.Tokens...)
		}
		mappings = append(mappings, spec.mapping())
	}
	return out, strings.Join(mappings, ","), log
}

func dockerRangeHi(p dockerPortPolicy) int {
	if p.Lo == 0 && p.Hi == 0 {
		return dockerRemapHi
	}
	return p.Hi
}

// dockerPlacePorts keeps the host ports when they are allowed and free,
// else finds a block; moved: they changed. No host port with a range
// configured: one is chosen in the range (docker would pick any).
func dockerPlacePorts(s *dockerPortSpec, proto string, p dockerPortPolicy, used func(string, int) bool) (moved, ok bool) {
	ranged := p.Lo != 0 || p.Hi != 0
	if s.HostLo == 0 && !ranged {
		return false, true
	}
	if s.HostLo != 0 {
		fine := true
		for port := s.HostLo; port <= s.HostHi; port++ {
			if ranged && (port < p.Lo || port > p.Hi) || used(proto, port) {
				fine = false
			}
		}
		if fine {
			return false, true
		}
	}
	lo, hi := dockerRemapLo, dockerRemapHi
	if ranged {
		lo, hi = p.Lo, p.Hi
	}
	n := s.CtrHi - s.CtrLo + 1
	run := 0
	for port := lo; port <= hi; port++ {
		if used(proto, port) {
			run = 0
			continue
		}
		if run++; run == n {
			s.HostLo, s.HostHi = port-n+1, port
			return true, true
		}
	}
	return false, false
}

// dockerHostMachineIP is the address published ports are reached at:
// CLEARML_AGENT_FORCE_HOST_MACHINE_IP, else the address of the interface
// that routes to api.public_ip_ping (default 8.8.8.8; a UDP "connect"
// sends nothing), as the reference. "" when there is none.
func dockerHostMachineIP(env envLookup, ping string) string {
	if ip := firstEnv(env, "CLEARML_AGENT_FORCE_HOST_MACHINE_IP"); ip != "" {
		return ip
	}
	if ping == "" {
		ping = "8.8.8.8"
	}
	c, err := net.Dial("udp", net.JoinHostPort(ping, "1"))
	if err != nil {
		return ""
	}
	defer c.Close()
	if a, ok := c.LocalAddr().(*net.UDPAddr); ok {
		return a.IP.String()
	}
	return ""
}
