package main

// System packages inside a task container: apt-get for what the image
// lacks (the venv module, the OpenCV libraries), and the check for them.

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"
)

// containerApt installs Debian packages inside a task container, where the
// inner agent runs as root and the image may lack what the task needs. The
// reference's container bootstrap runs apt-get on every start; here it runs
// only when something is missing.
type containerApt struct {
	log     io.Writer
	updated bool
}

// newContainerApt is nil outside a task container, when not root, or
// without apt-get.
func newContainerApt(env envLookup, log io.Writer) *containerApt {
	if firstEnv(env, "CLEARML_DOCKER_IMAGE", "TRAINS_DOCKER_IMAGE") == "" || os.Geteuid() != 0 {
		return nil
	}
	if _, err := exec.LookPath("apt-get"); err != nil {
		return nil
	}
	return &containerApt{log: log}
}

func (a *containerApt) install(ctx context.Context, why string, pkgs ...string) error {
	fmt.Fprintf(a.log, "clearml-agent: the image lacks %s; installing %s with apt-get\n", why, strings.Join(pkgs, " "))
	run := func(args ...string) error {
		cmd := setupCmd(ctx, "apt-get", args...)
		cmd.Env = append(os.Environ(), "DEBIAN_FRONTEND=noninteractive")
		cmd.Stdout, cmd.Stderr = a.log, a.log
		cmd.WaitDelay = 5 * time.Second
		return cmd.Run()
	}
	if !a.updated {
		if err := run("update", "-qq"); err != nil {
			return fmt.Errorf("apt-get update failed (%v); use an image that has %s", err, why)
		}
		a.updated = true
	}
	if err := run(append([]string{"install", "-y", "-qq", "--no-install-recommends"}, pkgs...)...); err != nil {
		return fmt.Errorf("apt-get could not install %s (%v); use an image that has %s", strings.Join(pkgs, " "), err, why)
	}
	return nil
}

// opencvPackages are the system libraries OpenCV's wheels load, which the
// reference installs in every container (agent.docker_install_opencv_libs).
var opencvPackages = []string{"libsm6", "libxext6", "libxrender-dev", "libglib2.0-0"}

// opencvLibsMissing looks for those libraries' files, without starting a process.
func opencvLibsMissing() bool {
	dirs := []string{"/usr/lib/x86_64-linux-gnu", "/lib/x86_64-linux-gnu", "/usr/lib/aarch64-linux-gnu",
		"/lib/aarch64-linux-gnu", "/usr/lib64", "/lib64", "/usr/lib", "/lib"}
	for _, lib := range []string{"libSM.so.6", "libXext.so.6", "libXrender.so.1", "libglib-2.0.so.0"} {
		found := false
		for _, d := range dirs {
			if fileExists(filepath.Join(d, lib)) {
				found = true
				break
			}
		}
		if !found {
			return true
		}
	}
	return false
}
