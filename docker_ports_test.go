package main

import (
	"reflect"
	"strings"
	"testing"
)

func TestParseDockerPublish(t *testing.T) {
	good := map[string]string{
		"80": "80", "8080:80": "8080:80", "127.0.0.1:8080:80": "127.0.0.1:8080:80", "0.0.0.0::80": "0.0.0.0::80",
		"8000-8002:80-82/udp": "8000-8002:80-82/udp", "[::1]:8080:80/tcp": "[::1]:8080:80/tcp", "9000-9010:80": "9000-9010:80",
	}
	for in, want := range good {
		s, err := parseDockerPublish(in)
		if err != nil || s.String() != want {
			t.Errorf("%s: %q %v", in, s.String(), err)
		}
	}
	for _, bad := range []string{"", "x", "80:x", "0:80", "70000", "8000-7000:80", "8000-8002:80-81", "1:2:3:4", "80/icmp", "[::1:80"} {
		if _, err := parseDockerPublish(bad); err == nil {
			t.Errorf("%q parsed", bad)
		}
	}
}

func TestDockerRemapPorts(t *testing.T) {
	busy := map[int]bool{9000: true, 9002: true, 10000: true}
	inUse := func(proto string, port int) bool { return proto == "tcp" && busy[port] }
	ranged := dockerPortPolicy{Lo: 9000, Hi: 9010, InUse: inUse}
	tests := []struct {
		args    string
		p       dockerPortPolicy
		want    string
		mapping string
		logs    int
	}{
		// In range and free: kept as written.
		{"-p 9001:80 --ipc=host", ranged, "-p 9001:80 --ipc=host", "9001:80", 0},
		// Taken, or outside the range: moved to a free block in the range.
		{"-p 9000:80", ranged, "--publish=9001:80", "9001:80", 1},
		{"--publish=8080:80", ranged, "--publish=9001:80", "9001:80", 1},
		{"-p 127.0.0.1:8080:80/tcp -p 8081:81", ranged, "--publish=127.0.0.1:9001:80/tcp --publish=9003:81", "9001:80,9003:81", 2},
		{"-p 8000-8002:80-82", ranged, "--publish=9003-9005:80-82", "9003-9005:80-82", 1},
		// No host port: one is chosen in the range.
		{"-p 80", ranged, "--publish=9001:80", "9001:80", 1},
		// Without a range: only taken ports move (to 10000-60000).
		{"-p 80 -p 9001:81 -p 9000:82", dockerPortPolicy{InUse: inUse}, "-p 80 -p 9001:81 --publish=10001:82", "80,9001:81,10001:82", 1},
		// No room: refused, not run outside the range.
		{"-p 8000-8020:80-100", ranged, "", "", 1},
		{"-p x", ranged, "", "", 1},
		// The host's network publishes nothing.
		{"--network host -p 8080:80", ranged, "--network host -p 8080:80", "", 0},
		{"--net=host -p 8080:80", ranged, "--net=host -p 8080:80", "", 0},
	}
	for _, tt := range tests {
		args, _ := shlexSplit(tt.args)
		out, mapping, logs := dockerRemapPorts(args, tt.p)
		if strings.Join(out, " ") != tt.want || mapping != tt.mapping || len(logs) != tt.logs {
			t.Errorf("%s:\n got %q %q %q\nwant %q %q (%d log lines)", tt.args, out, mapping, logs, tt.want, tt.mapping, tt.logs)
		}
	}
}

func TestDockerHostMachineIP(t *testing.T) {
	env := func(m map[string]string) envLookup {
		return func(k string) (string, bool) { v, ok := m[k]; return v, ok }
	}
	if ip := dockerHostMachineIP(env(map[string]string{"CLEARML_AGENT_FORCE_HOST_MACHINE_IP": "10.1.2.3"}), ""); ip != "10.1.2.3" {
		t.Errorf("forced: %q", ip)
	}
	if ip := dockerHostMachineIP(env(nil), "127.0.0.1"); ip != "127.0.0.1" {
		t.Errorf("routed to loopback: %q", ip)
	}
	if !reflect.DeepEqual(dockerPortSpec{CtrLo: 80, CtrHi: 80}.mapping(), "80") {
		t.Error("mapping")
	}
}
