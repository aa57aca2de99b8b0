package main

import (
	"context"
	"fmt"
	"io"
)

// listCmd prints the registered workers, as the reference's `list` does.
type listCmd struct{}

func (*listCmd) flags(*flagTable) {}

func (*listCmd) run(env *runEnv) error {
	cfg, err := loadConfig(env.global.configFile, nil)
	if err != nil {
		return err
	}
	c, err := newAPIClient(cfg, clientOptions{interactive: true})
	if err != nil {
		return err
	}
	if env.global.debug {
		c.logf = func(format string, args ...any) {
			fmt.Fprintf(env.stderr, "clearml-agent: debug: "+format+"\n", args...)
		}
	}
	var data map[string]any
	// last_seen 0 means every registered worker, however long idle.
	if err := c.call(context.Background(), "workers.get_all", "", map[string]any{"last_seen": 0}, &data); err != nil {
		return err
	}
	_, err = io.WriteString(env.stdout, dumpYAML(data)+"\n")
	return err
}

// initCmd stands in for the reference's interactive wizard.
type initCmd struct{}

func (*initCmd) flags(*flagTable) {}

func (*initCmd) run(*runEnv) error {
	return &configError{"init (the interactive wizard) is not supported: copy the credentials block from the ClearML web UI (Settings > Workspace > Create new credentials) into ~/clearml.conf, or set CLEARML_API_HOST, CLEARML_API_ACCESS_KEY and CLEARML_API_SECRET_KEY"}
}
