package main

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/clearml-go/clearml-agent/testdata/fakeserver"
	"golang.org/x/sys/unix"
)

// ptySession is `clearml-agent init` on a pseudo-terminal: the agent's
// stdin, stdout and stderr are the terminal, the test types on the master.
type ptySession struct {
	t      *testing.T
	master *os.File
	slave  *os.File
	out    lockedBuffer
	cmd    *exec.Cmd
	seen   int // output already matched by expect
}

// startInitPTY opens /dev/ptmx and starts init on its terminal, with the
// terminal as the controlling one (Ctrl-C reaches the agent as SIGINT).
func startInitPTY(t *testing.T, env map[string]string) *ptySession {
	t.Helper()
	master, err := os.OpenFile("/dev/ptmx", os.O_RDWR|syscall.O_NOCTTY, 0)
	if err != nil {
		t.Skipf("no pseudo-terminals here: %v", err)
	}
	fd := int(master.Fd())
	if err := unix.IoctlSetPointerInt(fd, unix.TIOCSPTLCK, 0); err != nil {
		t.Fatal(err)
	}
	n, err := unix.IoctlGetInt(fd, unix.TIOCGPTN)
	if err != nil {
		t.Fatal(err)
	}
	slave, err := os.OpenFile(fmt.Sprintf("/dev/pts/%d", n), os.O_RDWR|syscall.O_NOCTTY, 0)
	if err != nil {
		t.Fatal(err)
	}
	p := &ptySession{t: t, master: master, slave: slave}
	p.cmd = exec.Command(agentBin, "init")
	p.cmd.Env = []string{"PATH=" + os.Getenv("PATH")}
	for k, v := range env {
		p.cmd.Env = append(p.cmd.Env, k+"="+v)
	}
	p.cmd.Stdin, p.cmd.Stdout, p.cmd.Stderr = slave, slave, slave
	p.cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true, Setctty: true, Ctty: 0}
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		buf := make([]byte, 4096)
		for {
			n, err := master.Read(buf)
			p.out.Write(buf[:n])
			if err != nil {
				return
			}
		}
	}()
	t.Cleanup(func() {
		p.cmd.Process.Kill()
		p.cmd.Wait()
		master.Close()
		slave.Close()
	})
	return p
}

// expect waits for text in the output after what was matched before.
func (p *ptySession) expect(text string) {
	p.t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for {
		all := p.out.String()
		if i := strings.Index(all[p.seen:], text); i >= 0 {
			p.seen += i + len(text)
			return
		}
		if time.Now().After(deadline) {
			p.t.Fatalf("no %q on the terminal; it shows:\n%s", text, all)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// typeLine types s and Enter.
func (p *ptySession) typeLine(s string) {
	p.t.Helper()
	if _, err := p.master.Write([]byte(s + "\n")); err != nil {
		p.t.Fatal(err)
	}
}

// wait waits for the agent to exit and returns its exit code.
func (p *ptySession) wait() int {
	done := make(chan error, 1)
	go func() { done <- p.cmd.Wait() }()
	select {
	case err := <-done:
		return exitCodeOf(err)
	case <-time.After(20 * time.Second):
		p.t.Fatalf("init did not exit; the terminal shows:\n%s", p.out.String())
		return 0
	}
}

// echoOn reports whether the terminal echoes input.
func (p *ptySession) echoOn() bool {
	tio, err := unix.IoctlGetTermios(int(p.slave.Fd()), unix.TCGETS)
	return err == nil && tio.Lflag&unix.ECHO != 0
}

// On a terminal: the pasted block, confirmations, and secrets typed at
// prompts that do not echo them.
func TestInitTerminal(t *testing.T) {
	s := startServer(t)
	home := t.TempDir()
	p := startInitPTY(t, map[string]string{"HOME": home})
	p.expect("Paste the copied configuration here:")
	// The block without its keys: they are asked for, the secret hidden.
	block := webUIBlock(s.URL(), "", "")
	block = block[:strings.Index(block, "  credentials")] + "}"
	for _, line := range strings.Split(block, "\n") {
		p.typeLine(line)
	}
	p.expect("Access key: ")
	p.typeLine(fakeserver.TestsAccessKey)
	p.expect("Secret key (not shown): ")
	if p.echoOn() {
		t.Error("the terminal echoes at the secret key prompt")
	}
	p.typeLine(fakeserver.TestsSecretKey)
	for _, q := range []string{"Web application URL [", "API server URL [", "File server URL ["} {
		p.expect(q)
		p.typeLine("")
	}
	p.expect("Credentials verified.")
	p.expect("(C)ustom [N]: ")
	p.typeLine("c")
	p.expect("Output URI (e.g. s3://bucket/folder")
	p.typeLine("s3://models/team")
	p.expect("Git user for cloning over https")
	p.typeLine("octocat")
	p.expect("Git password or token for octocat (not shown): ")
	p.typeLine("ghp_ptyT0ken")
	p.expect("Extra package index URL for pip")
	p.typeLine("")
	p.expect("setup completed successfully")
	if code := p.wait(); code != 0 {
		t.Fatalf("exit %d; the terminal shows:\n%s", code, p.out.String())
	}
	screen := p.out.String()
	if !strings.Contains(screen, "octocat") || !strings.Contains(screen, fakeserver.TestsAccessKey) {
		t.Errorf("typed answers are not echoed (the check below would prove nothing):\n%s", screen)
	}
	for _, secret := range []string{fakeserver.TestsSecretKey, "ghp_ptyT0ken"} {
		if strings.Contains(screen, secret) {
			t.Errorf("%q shows on the terminal:\n%s", secret, screen)
		}
	}
	if !p.echoOn() {
		t.Error("echo left off after init")
	}
	cfg := readInitConfig(t, filepath.Join(home, "clearml.conf"))
	for k, v := range map[string]string{"api.credentials.secret_key": fakeserver.TestsSecretKey, "agent.git_pass": "ghp_ptyT0ken",
		"sdk.development.default_output_uri": "s3://models/team", "api.api_server": s.URL()} {
		if got := cfg.str(k); got != v {
			t.Errorf("%s = %q, want %q", k, got, v)
		}
	}
}

// Ctrl-C at a hidden prompt stops init and leaves the terminal echoing;
// an existing file is asked about first.
func TestInitTerminalInterrupt(t *testing.T) {
	home := t.TempDir()
	os.WriteFile(filepath.Join(home, "clearml.conf"), []byte("# mine\n"), 0o600)
	p := startInitPTY(t, map[string]string{"HOME": home})
	p.expect("Replace it? The old file is kept as clearml.conf.bak (y/N): ")
	p.typeLine("y")
	p.expect("Paste the copied configuration here:")
	p.typeLine("api { web_server: http://127.0.0.1:1 }")
	p.expect("Access key: ")
	p.typeLine("AK")
	p.expect("Secret key (not shown): ")
	if p.echoOn() {
		t.Error("the terminal echoes at the secret prompt")
	}
	p.master.Write([]byte{3}) // Ctrl-C
	if code := p.wait(); code != -int(syscall.SIGINT) {
		t.Errorf("exit %d, want death by SIGINT", code)
	}
	if !p.echoOn() {
		t.Error("Ctrl-C at the secret prompt left the terminal without echo")
	}
	if data, _ := os.ReadFile(filepath.Join(home, "clearml.conf")); string(data) != "# mine\n" {
		t.Errorf("the file changed: %q", data)
	}
}
