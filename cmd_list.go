package main

import (
	"context"
	"io"
)

// listCmd prints the registered workers, as the reference's `list` does.
type listCmd struct{}

func (*listCmd) flags(*flagTable) {}

func (*listCmd) run(cx *cmdContext) error {
	_, c, _, err := cx.connect(clientOptions{interactive: true}, false)
	if err != nil {
		return err
	}
	var data map[string]any
	// last_seen 0 means every registered worker, however long idle.
	if err := c.call(context.Background(), "workers.get_all", "", map[string]any{"last_seen": 0}, &data); err != nil {
		return err
	}
	_, err = io.WriteString(cx.stdout, dumpYAML(data)+"\n")
	return err
}
