package main

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
)

// childConfig is the configuration a daemon's tasks run with, as in the
// reference: a private copy (0600, in the temp dir) written at start, so
// that editing clearml.conf does not change what later tasks get until
// the daemon restarts; with agent.reload_config the file is read again
// before each task and the copy updated when it changed.
type childConfig struct {
	mu      sync.Mutex
	path    string
	cfg     *agentConfig
	cfgFile string // --config-file, or "" for the usual files
	stamp   string // the sources' sizes and times when last read
}

func newChildConfig(cfg *agentConfig, configFile string) (*childConfig, error) {
	f, err := os.CreateTemp(tempDirFor(cfg), ".clearml_agent.*.cfg")
	if err != nil {
		return nil, fmt.Errorf("cannot write the tasks' configuration: %w (set CLEARML_AGENT_TEMP_STDOUT_FILE_DIR to a writable folder)", err)
	}
	f.Close()
	c := &childConfig{path: f.Name(), cfg: cfg, cfgFile: configFile}
	c.stamp = c.sourceStamp()
	if err := c.write(); err != nil {
		os.Remove(c.path)
		return nil, err
	}
	return c, nil
}

// sourceStamp identifies the state of the files the configuration came from.
func (c *childConfig) sourceStamp() string {
	files := []string{c.cfg.location}
	if c.cfg.location == "" {
		home := homeDir(c.cfg.env)
		files = []string{filepath.Join(home, "trains.conf"), filepath.Join(home, "clearml.conf")}
	}
	var b strings.Builder
	for _, f := range files {
		if st, err := os.Stat(f); err == nil {
			fmt.Fprintf(&b, "%s:%d:%d;", f, st.Size(), st.ModTime().UnixNano())
		} else {
			b.WriteString(f + ":-;")
		}
	}
	return b.String()
}

func (c *childConfig) write() error {
	data, err := json.MarshalIndent(hoconToPlain(c.cfg.root), "", "  ")
	if err == nil {
		err = os.WriteFile(c.path, data, 0o600)
	}
	return err
}

// current is the configuration for the next task; with
// agent.reload_config a changed file is read again first.
func (c *childConfig) current(logf func(string, ...any)) *agentConfig {
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.cfg.boolean("agent.reload_config", false) {
		return c.cfg
	}
	stamp := c.sourceStamp()
	if stamp == c.stamp {
		return c.cfg
	}
	c.stamp = stamp
	cfg, err := loadConfig(c.cfgFile, c.cfg.env)
	if err != nil {
		logf("Failed reloading config file: %v", err)
		return c.cfg
	}
	old := c.cfg
	c.cfg = cfg
	if err := c.write(); err != nil {
		logf("Failed reloading config file: %v", err)
		c.cfg = old
		return old
	}
	logf("Config file change detected, reloading and updating %q", c.path)
	return cfg
}

func (c *childConfig) remove() { os.Remove(c.path) }

// childConfig is what the next task gets (the daemon's own settings stay
// as they were at start).
func (s *scheduler) childConfig() *agentConfig {
	if s.childCfg == nil {
		return s.cfg
	}
	return s.childCfg.current(s.logf)
}
