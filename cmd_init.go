package main

// `clearml-agent init`: the setup wizard. As the reference's
// (clearml_agent/commands/config.py): paste the credentials block the web
// UI copies (Settings > Workspace > Create new credentials), confirm the
// three server URLs, have the credentials verified by the server
// (auth.login), answer the output URI, git and package index questions,
// and get a new clearml.conf (mode 0600): the server block, the answers,
// then defaults.conf with its comments. An existing file is replaced only
// when the user says so (the old one is kept as FILE.bak).
//
// Without a terminal the same questions are read from stdin, one answer a
// line, so a script can pipe the block in; at the end of input every
// remaining question takes its default (and an existing file is kept).
// Secrets typed at a prompt are not echoed, and are never printed back.

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// initWizardCmd is `init`.
type initWizardCmd struct{}

func (*initWizardCmd) flags(*flagTable) {}

func (*initWizardCmd) run(cx *cmdContext) error {
	w := newInitWizard(os.Stdin, cx.stdout, os.LookupEnv)
	return w.run(initTarget(cx.global.configFile, os.LookupEnv))
}

// initTarget is the file init writes: --config-file, else
// CLEARML_CONFIG_FILE (or its TRAINS_ twin), else ~/clearml.conf.
func initTarget(configFile string, env envLookup) string {
	if configFile != "" {
		return configFile
	}
	if p := firstEnv(env, "CLEARML_CONFIG_FILE", "TRAINS_CONFIG_FILE"); p != "" {
		return expandHomeEnv(p, env)
	}
	return filepath.Join(homeDir(env), "clearml.conf")
}

// initWizard holds the wizard's input and output.
type initWizard struct {
	in     *bufio.Reader
	out    io.Writer
	tty    int  // stdin's descriptor when it is a terminal, else -1
	eof    bool // the input has ended: every further question takes its default
	env    envLookup
	verify func(ctx context.Context, api, key, secret string) error
}

func newInitWizard(in *os.File, out io.Writer, env envLookup) *initWizard {
	w := &initWizard{in: bufio.NewReader(in), out: out, tty: -1, env: env}
	if _, err := unix.IoctlGetTermios(int(in.Fd()), ioctlGetTermios); err == nil {
		w.tty = int(in.Fd())
	}
	w.verify = func(ctx context.Context, api, key, secret string) error {
		return verifyInitCredentials(ctx, api, key, secret, env)
	}
	return w
}

// initAnswers is what goes into the new file.
type initAnswers struct {
	web, api, files   string
	accessKey, secret string
	outputURI         string
	gitUser, gitPass  string
	indexes           []string
}

func (w *initWizard) say(format string, args ...any) { fmt.Fprintf(w.out, format+"\n", args...) }

func (w *initWizard) run(target string) error {
	w.say("CLEARML-AGENT setup process")
	if err := w.confirmOverwrite(target); err != nil {
		return err
	}
	var a initAnswers
	if err := w.readCredentials(&a); err != nil {
		return err
	}
	if err := w.askHosts(&a); err != nil {
		return err
	}
	if err := w.verifyLoop(&a); err != nil {
		return err
	}
	w.askOptions(&a)
	if err := writeInitConfig(target, renderInitConfig(&a)); err != nil {
		return err
	}
	w.say("\nNew configuration stored in %s", target)
	w.say("CLEARML-AGENT setup completed successfully.")
	w.say("Start a worker with: clearml-agent daemon --queue default")
	return nil
}

// readLine reads one line without its line end; eof is true at the end
// of input with nothing read.
func (w *initWizard) readLine() (line string, eof bool) {
	s, err := w.in.ReadString('\n')
	if err != nil && s == "" {
		w.eof = true
		return "", true
	}
	return strings.TrimRight(s, "\r\n"), false
}

// readAnswer is readLine after a prompt. Without a terminal nobody echoes
// the answer, so a line end keeps the transcript readable.
func (w *initWizard) readAnswer() (string, bool) {
	line, eof := w.readLine()
	if w.tty < 0 {
		fmt.Fprintln(w.out)
	}
	return line, eof
}

// ask prints prompt (with def in brackets) and returns the answer, or def
// for an empty answer or the end of input.
func (w *initWizard) ask(prompt, def string) string {
	if def != "" {
		prompt += " [" + def + "]"
	}
	fmt.Fprint(w.out, prompt+": ")
	line, _ := w.readAnswer()
	if line = strings.TrimSpace(line); line == "" {
		return def
	}
	return line
}

// askSecret is ask for a secret: a terminal does not echo it.
func (w *initWizard) askSecret(prompt string) (string, bool) {
	if w.tty < 0 {
		fmt.Fprint(w.out, prompt+": ")
		line, eof := w.readAnswer()
		return strings.TrimSpace(line), !eof
	}
	// Echo goes off before the prompt shows: nothing typed early echoes.
	restore := noEcho(w.tty)
	fmt.Fprint(w.out, prompt+": ")
	line, eof := w.readLine()
	restore()
	return strings.TrimSpace(line), !eof
}

// noEcho turns the terminal's echo off (the line end still shows) until
// the returned function is called; a signal meanwhile restores it first.
func noEcho(fd int) (restore func()) {
	old, err := unix.IoctlGetTermios(fd, ioctlGetTermios)
	if err != nil {
		return func() {}
	}
	t := *old
	t.Lflag &^= unix.ECHO
	t.Lflag |= unix.ECHONL | unix.ICANON
	if unix.IoctlSetTermios(fd, ioctlSetTermios, &t) != nil {
		return func() {}
	}
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM, syscall.SIGHUP)
	done := make(chan struct{})
	go func() {
		select {
		case sig := <-sigs:
			unix.IoctlSetTermios(fd, ioctlSetTermios, old)
			signal.Stop(sigs)
			// Die of the signal as if it had not been caught.
			unix.Kill(os.Getpid(), sig.(syscall.Signal))
		case <-done:
		}
	}()
	return func() {
		signal.Stop(sigs)
		close(done)
		unix.IoctlSetTermios(fd, ioctlSetTermios, old)
	}
}

// confirmOverwrite asks before an existing, non-empty file is replaced.
func (w *initWizard) confirmOverwrite(target string) error {
	st, err := os.Stat(target)
	if err != nil || st.Size() == 0 {
		return nil
	}
	w.say("Configuration file already exists: %s", target)
	w.say("(It already works with this agent: missing agent settings take the built-in defaults.)")
	if ans := strings.ToLower(w.ask("Replace it? The old file is kept as "+filepath.Base(target)+".bak (y/N)", "")); ans == "y" || ans == "yes" {
		return nil
	}
	return fmt.Errorf("configuration file %s already exists and was left unchanged (answer y to replace it, or set CLEARML_CONFIG_FILE to write another file)", target)
}

const initPasteHelp = `
Create credentials in the ClearML web application (your server, or the
hosted service at https://app.clear.ml): Settings > Workspace > Create new
credentials, then "Copy to clipboard".

Paste the copied configuration here:`

// readCredentials reads the pasted block; without usable credentials in
// it, the keys are asked for one by one.
func (w *initWizard) readCredentials(a *initAnswers) error {
	w.say("%s", initPasteHelp)
	block, eof := w.readBlock()
	if strings.TrimSpace(block) == "" && eof {
		return errors.New("no credentials given: paste the block from the web UI (Settings > Workspace > Create new credentials), or pipe it into clearml-agent init")
	}
	p, err := parsePastedConfig(block)
	if err != nil {
		w.say("Could not read the pasted text (%v): enter the credentials by hand.", err)
	}
	a.web, a.api, a.files = p.web, p.api, p.files
	a.accessKey, a.secret = p.accessKey, p.secret
	if a.accessKey == "" || a.secret == "" {
		if !w.askKeys(a) {
			return errors.New("no credentials given (an access key and a secret key are both needed)")
		}
	}
	w.say("Detected credentials: access key %q, secret key (%d characters, not shown)", a.accessKey, len(a.secret))
	return nil
}

// askKeys asks for the access and secret keys; false at the end of input.
func (w *initWizard) askKeys(a *initAnswers) bool {
	a.accessKey = w.ask("Access key", "")
	secret, ok := w.askSecret("Secret key (not shown)")
	a.secret = secret
	return ok && a.accessKey != "" && a.secret != ""
}

// readBlock reads lines until the braces of the block balance, a blank
// line after some text, or the end of input.
func (w *initWizard) readBlock() (string, bool) {
	var b strings.Builder
	depth, opened := 0, false
	for {
		line, eof := w.readLine()
		if eof {
			return b.String(), true
		}
		if strings.TrimSpace(line) == "" {
			if b.Len() > 0 {
				return b.String(), false
			}
			continue
		}
		b.WriteString(line + "\n")
		d, o := braceDepth(line)
		depth += d
		opened = opened || o
		if opened && depth <= 0 {
			return b.String(), false
		}
	}
}

// braceDepth is the change in brace depth over line, ignoring braces in
// quoted strings, and whether it opened one.
func braceDepth(line string) (delta int, opened bool) {
	inQuote, escaped := false, false
	for _, c := range line {
		switch {
		case escaped:
			escaped = false
		case inQuote && c == '\\':
			escaped = true
		case c == '"':
			inQuote = !inQuote
		case !inQuote && c == '{':
			delta++
			opened = true
		case !inQuote && c == '}':
			delta--
		}
	}
	return delta, opened
}

// pastedConfig is what a pasted block holds.
type pastedConfig struct {
	web, api, files   string
	accessKey, secret string
}

// initBlockKey finds a key that starts a new field, for text whose line
// ends were lost (some terminals and web consoles paste one line).
var initBlockKey = lazyRegexp(`\s+("?(?:web_server|api_server|files_server|host|credentials|access_key|secret_key)"?\s*[:={])`)

// parsePastedConfig reads the web UI's block (api { web_server: ...
// credentials { "access_key" = ..., "secret_key" = ... } }), or the older
// forms without the api wrapper.
func parsePastedConfig(text string) (pastedConfig, error) {
	noEnv := func(string) (string, bool) { return "", false }
	obj, err := parseHOCON("<pasted>", []byte(text), noEnv)
	if err != nil {
		obj, err = parseHOCON("<pasted>", []byte(initBlockKey().ReplaceAllString(text, "\n$1")), noEnv)
	}
	if err != nil {
		return pastedConfig{}, err
	}
	str := func(paths ...string) string {
		for _, p := range paths {
			parts, _ := splitHOCONPath(p)
			if v, ok := obj.Lookup(parts...); ok {
				if s := strings.TrimSpace(scalarText(v)); s != "" && v != nil {
					return s
				}
			}
		}
		return ""
	}
	return pastedConfig{
		web:       str("api.web_server", "web_server"),
		api:       str("api.api_server", "api.host", "api_server", "host"),
		files:     str("api.files_server", "files_server"),
		accessKey: str("api.credentials.access_key", "credentials.access_key", "access_key"),
		secret:    str("api.credentials.secret_key", "credentials.secret_key", "secret_key"),
	}, nil
}

// askHosts settles the three server URLs: from the block, else derived
// from the one given, else asked for; each is confirmed (Enter keeps it).
func (w *initWizard) askHosts(a *initAnswers) error {
	for _, p := range []*string{&a.web, &a.api, &a.files} {
		if *p != "" {
			if u, ok := normalizeServerURL(*p); ok {
				*p = u
			} else {
				w.say("Not an http(s) URL: %q", *p)
				*p = ""
			}
		}
	}
	if a.web == "" && a.api == "" && a.files == "" {
		a.web = w.askURL("Web application URL (e.g. https://app.clear.ml or http://myserver:8080)", "https://app.clear.ml")
	}
	web, api, files := deriveServers(firstNonEmpty(a.web, a.api, a.files))
	a.web = w.askURL("Web application URL", firstNonEmpty(a.web, web))
	a.api = w.askURL("API server URL", firstNonEmpty(a.api, api))
	a.files = w.askURL("File server URL", firstNonEmpty(a.files, files))
	w.say("\nClearML servers:\n  Web application: %s\n  API:             %s\n  File store:      %s\n", a.web, a.api, a.files)
	return nil
}

// askURL asks for a server URL until the answer is one (or the input ends).
func (w *initWizard) askURL(prompt, def string) string {
	for {
		ans := w.ask(prompt, def)
		if u, ok := normalizeServerURL(ans); ok {
			return u
		}
		if w.eof {
			return def
		}
		w.say("Not an http(s) URL: %q", ans)
	}
}

// verifyLoop checks the credentials with the server; after a refusal the
// keys are asked for again, after no answer the API URL (three tries).
func (w *initWizard) verifyLoop(a *initAnswers) error {
	for try := 1; ; try++ {
		w.say("Verifying the credentials with %s ...", a.api)
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		err := w.verify(ctx, a.api, a.accessKey, a.secret)
		cancel()
		if err == nil {
			w.say("Credentials verified.")
			return nil
		}
		w.say("Error: %v", err)
		if try == 3 || w.eof {
			return fmt.Errorf("%v; nothing was written", err)
		}
		var rej *initRejected
		if errors.As(err, &rej) {
			w.say("Enter the credentials again (Ctrl-C to stop):")
			if !w.askKeys(a) {
				return fmt.Errorf("%v; nothing was written", err)
			}
			continue
		}
		a.api = w.askURL("API server URL", a.api)
		if w.eof {
			return fmt.Errorf("%v; nothing was written", err)
		}
	}
}

// askOptions asks for the default output URI, git credentials and extra
// package indexes.
func (w *initWizard) askOptions(a *initAnswers) {
	for a.outputURI == "" {
		ans := strings.ToLower(w.ask("\nDefault output URI for models and artifacts: (N)one, ClearML (S)erver, (C)ustom", "N"))
		if ans == "n" || ans == "none" {
			break
		}
		if ans == "s" || ans == "server" {
			a.outputURI = a.files
		} else if ans == "c" || ans == "custom" {
			a.outputURI = w.ask("Output URI (e.g. s3://bucket/folder or "+a.files+")", "")
		}
		if w.eof {
			break
		}
	}
	w.say("Default output URI: %s", firstNonEmpty(a.outputURI, "not set"))

	a.gitUser = w.ask("\nGit user for cloning over https (empty: use this machine's SSH key)", "")
	if a.gitUser != "" {
		w.say("A personal access token works as the password; GitHub, GitLab and Bitbucket create them in the user's settings.")
		a.gitPass, _ = w.askSecret("Git password or token for " + a.gitUser + " (not shown)")
		w.say("Git repositories will be cloned as %s (the password is not shown).", a.gitUser)
	}

	for len(a.indexes) < 20 {
		u := w.ask("\nExtra package index URL for pip (empty when done)", "")
		if u == "" {
			break
		}
		a.indexes = append(a.indexes, u)
	}
}
