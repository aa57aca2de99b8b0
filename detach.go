package main

// Daemon life outside the poll loop (reference §4.15); pid slots, worker
// identity and --stop are in instances.go.
//
// Background mode (`daemon --detached`): the foreground command creates the
// log file <dir>/.clearml_agent_daemon_outXXXXXXXX.txt (dir is
// $CLEARML_AGENT_TEMP_STDOUT_FILE_DIR or the temp dir), prints where it is,
// and re-runs this binary in a new session with the same arguments minus
// -d/--detached, stdout and stderr to the log. The child learns the log path
// from $CLEARML_AGENT_DETACHED_LOG, which also stops it detaching again; it
// unsets the variable so tasks do not inherit it.
//
// systemd (Type=notify, WatchdogSec=): with $NOTIFY_SOCKET set the daemon
// sends READY=1 once registered, STATUS= lines, STOPPING=1 at shutdown, and
// WATCHDOG=1 every half $WATCHDOG_USEC. The variables are taken out of the
// environment so a task cannot speak to systemd as the agent.

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

const (
	detachedLogEnv   = "CLEARML_AGENT_DETACHED_LOG" // set in a --detached child: its stdout is this log
	backgroundNotice = "Running CLEARML-AGENT daemon in background mode, writing stdout/stderr to %s\n"
)

// createDaemonLog creates the background-mode log file as the reference
// names it: <dir>/.clearml_agent_daemon_outXXXXXXXX.txt, mode 0600, opened
// for append (so truncating it between tasks leaves no hole). dir is
// $CLEARML_AGENT_TEMP_STDOUT_FILE_DIR or the temp dir.
func createDaemonLog(env envLookup) (*os.File, error) {
	if env == nil {
		env = os.LookupEnv
	}
	dir := firstEnv(env, "CLEARML_AGENT_TEMP_STDOUT_FILE_DIR")
	if dir == "" {
		dir = os.TempDir()
	}
	const letters = "abcdefghijklmnopqrstuvwxyz0123456789_"
	for try := 0; ; try++ {
		b := make([]byte, 8)
		for i := range b {
			b[i] = letters[rand.IntN(len(letters))]
		}
		path := filepath.Join(dir, ".clearml_agent_daemon_out"+string(b)+".txt")
		f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL|os.O_APPEND, 0o600)
		if errors.Is(err, os.ErrExist) && try < 100 {
			continue
		}
		return f, err
	}
}

// detachedAgent is a daemon started by detach.
type detachedAgent struct {
	PID    int
	exited chan struct{}
	state  *os.ProcessState
}

// detach re-runs this binary as a daemon in a new session (--detached):
// the same arguments minus -d/--detached, the same working directory,
// stdin /dev/null, stdout and stderr to log. The child finds the log path
// in $CLEARML_AGENT_DETACHED_LOG (see takeDetachedMarker), which also tells
// it not to detach again whatever its arguments say.
func detach(args []string, log *os.File) (*detachedAgent, error) {
	return detachExec(selfExe(), os.Args[0], stripDetachedFlag(args), log)
}

// detachExec runs exe (named argv0) with args in a new session.
func detachExec(exe, argv0 string, args []string, log *os.File) (*detachedAgent, error) {
	devnull, err := os.Open(os.DevNull)
	if err != nil {
		return nil, err
	}
	defer devnull.Close()
	cmd := &exec.Cmd{Path: exe, Args: append([]string{argv0}, args...)}
	cmd.Env = append(os.Environ(), detachedLogEnv+"="+log.Name())
	cmd.Stdin, cmd.Stdout, cmd.Stderr = devnull, log, log
	// Its own session: no controlling terminal, no SIGHUP or Ctrl-C from ours.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	d := &detachedAgent{PID: cmd.Process.Pid, exited: make(chan struct{})}
	go func() {
		cmd.Wait()
		d.state = cmd.ProcessState
		close(d.exited)
	}()
	return d, nil
}

// waitStarted waits until the daemon has registered its pid file (ok), has
// exited (an error naming the log), or timeout passed (ok: it may still be
// logging in; the log will tell).
func (d *detachedAgent) waitStarted(r *instanceRegistry, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		select {
		case <-d.exited:
			return fmt.Errorf("the detached daemon exited (%s) before it started; see its log", d.state)
		default:
		}
		if r != nil {
			if live, err := r.scan(false); err == nil {
				if indexInstance(live, func(in agentInstance) bool { return in.PID == d.PID }) >= 0 {
					return nil
				}
			}
		}
		if time.Now().After(deadline) {
			return nil
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// takeDetachedMarker is true in a --detached child, with its log path; it
// unsets the variable so tasks do not inherit it.
func takeDetachedMarker() (logPath string, ok bool) {
	logPath, ok = os.LookupEnv(detachedLogEnv)
	os.Unsetenv(detachedLogEnv)
	return logPath, ok && logPath != ""
}

// detachableCommands take -d/--detached.
var detachableCommands = map[string]bool{"daemon": true, "slurm": true}

// stripDetachedFlag drops --detached (and its unambiguous prefixes) and the
// -d letter of short clusters after the "daemon" word; "-d" before it is
// --debug and stays.
func stripDetachedFlag(args []string) []string {
	out := make([]string, 0, len(args))
	inDaemon := false
	for i, a := range args {
		switch {
		case !inDaemon:
			inDaemon = detachableCommands[a]
		case a == "--":
			return append(out, args[i:]...)
		case strings.HasPrefix(a, "--"):
			if len(a) >= 4 && strings.HasPrefix("--"+detachedFlag, a) {
				continue
			}
		case len(a) > 1 && a[0] == '-' && strings.Trim(a[1:], detachedShort+optimizeShort) == "":
			// A cluster of flags that take no value, e.g. -Od.
			a = "-" + strings.ReplaceAll(a[1:], detachedShort, "")
			if a == "-" {
				continue
			}
		}
		out = append(out, a)
	}
	return out
}

// sdNotifier speaks systemd's notify protocol (Type=notify, WatchdogSec=).
// A nil notifier (no $NOTIFY_SOCKET) does nothing.
type sdNotifier struct {
	addr     string
	watchdog time.Duration // ping interval: half of $WATCHDOG_USEC; 0 for none
}

// sdNotifyEnv are the variables a task must not inherit from the daemon.
var sdNotifyEnv = []string{"NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID"}

// takeSDNotifier reads the notifier from the process environment and
// unsets its variables, so that tasks do not talk to systemd as the agent.
func takeSDNotifier() *sdNotifier {
	n := newSDNotifier(os.LookupEnv)
	for _, k := range sdNotifyEnv {
		os.Unsetenv(k)
	}
	return n
}

func newSDNotifier(env envLookup) *sdNotifier {
	if env == nil {
		env = os.LookupEnv
	}
	addr, _ := env("NOTIFY_SOCKET")
	if addr == "" || (addr[0] != '/' && addr[0] != '@') {
		return nil // unset, or a socket kind (vsock:) we do not speak
	}
	n := &sdNotifier{addr: addr}
	usec, _ := env("WATCHDOG_USEC")
	pid, hasPID := env("WATCHDOG_PID")
	if u, err := strconv.ParseInt(usec, 10, 64); err == nil && u > 0 && (!hasPID || pid == strconv.Itoa(os.Getpid())) {
		n.watchdog = time.Duration(u) * time.Microsecond / 2
	}
	return n
}

// notify sends one state datagram ("READY=1", "STATUS=...").
func (n *sdNotifier) notify(state string) error {
	if n == nil {
		return nil
	}
	// Go maps a leading '@' to the abstract namespace.
	c, err := net.DialUnix("unixgram", nil, &net.UnixAddr{Name: n.addr, Net: "unixgram"})
	if err != nil {
		return err
	}
	defer c.Close()
	_, err = c.Write([]byte(state))
	return err
}

// ready: call once the worker is registered.
func (n *sdNotifier) ready() error { return n.notify("READY=1") }

// status sets the one-line state `systemctl status` shows.
func (n *sdNotifier) status(text string) error {
	return n.notify("STATUS=" + strings.ReplaceAll(text, "\n", " "))
}

// stopping: call when shutdown begins.
func (n *sdNotifier) stopping() error { return n.notify("STOPPING=1") }

// watchdogLoop pings the watchdog until ctx ends; it returns at once when no
// watchdog is configured.
func (n *sdNotifier) watchdogLoop(ctx context.Context) {
	if n == nil || n.watchdog <= 0 {
		return
	}
	t := time.NewTicker(n.watchdog)
	defer t.Stop()
	for {
		n.notify("WATCHDOG=1")
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}
