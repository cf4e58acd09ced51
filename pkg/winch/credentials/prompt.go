package credentials

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"time"
)

// Flow is how an OIDC login proves who the user is.
type Flow int

const (
	// FlowDefault follows Deps.DeviceFlow (winch's --oidc_device_flow).
	FlowDefault Flow = iota
	// FlowBrowser is the authorization-code flow with PKCE and a loopback callback.
	FlowBrowser
	// FlowDevice is the device authorization grant: the user confirms a code on any device.
	FlowDevice
)

// String returns "default", "browser" or "device", the values ParseFlow accepts.
func (f Flow) String() string {
	switch f {
	case FlowBrowser:
		return "browser"
	case FlowDevice:
		return "device"
	}
	return "default"
}

// ParseFlow is the inverse of Flow.String; "" is FlowDefault.
func ParseFlow(s string) (Flow, error) {
	switch s {
	case "", "default":
		return FlowDefault, nil
	case "browser":
		return FlowBrowser, nil
	case "device":
		return FlowDevice, nil
	}
	return FlowDefault, fmt.Errorf("credentials: unknown login flow %q (want browser or device)", s)
}

// Prompt is what the user must do to complete a login. It holds nothing secret: the authorization URL carries only
// public parameters (client ID, redirect URL, PKCE challenge, state, nonce) and the user code exists to be typed.
type Prompt struct {
	// Source is the auth source's name.
	Source string `json:"source"`
	// URL is the authorization URL (browser flow) or the verification URL (device flow; with the code in it when
	// the provider offers that).
	URL string `json:"url"`
	// UserCode is the device flow's code the user enters or confirms; empty for the browser flow.
	UserCode string `json:"user_code,omitempty"`
	// Device reports the device flow.
	Device bool `json:"device,omitempty"`
}

// LoginOptions choose how one login started by Set.Login runs. The zero value follows Deps.
type LoginOptions struct {
	// Flow chooses the flow of OIDC sources; FlowDefault follows Deps.DeviceFlow.
	Flow Flow
	// Prompt, when set, receives the login's instructions, and the caller shows them and opens a browser if it
	// wants to. When nil, the instructions are logged and the browser flow opens Deps.OpenBrowser. Prompt must not
	// block.
	Prompt func(Prompt)
}

// browserStartGrace is how long OpenBrowser waits for a browser command to fail before it takes the command as
// started: openers such as xdg-open return at once, while a browser named in $BROWSER may stay in the foreground.
const browserStartGrace = 2 * time.Second

// OpenBrowser asks the desktop to show url: first each command in $BROWSER (colon-separated, as sensible-browser
// reads it; "%s" in a command is replaced by the URL, otherwise the URL is appended), then the platform's opener
// (xdg-open, open on macOS). It returns once one of them started without failing.
func OpenBrowser(url string) error {
	return openBrowserWith(os.Getenv("BROWSER"), runtime.GOOS, url)
}

func openBrowserWith(browserEnv, goos, url string) error {
	var cmds [][]string
	for _, c := range strings.Split(browserEnv, string(os.PathListSeparator)) {
		args := strings.Fields(c)
		if len(args) == 0 {
			continue
		}
		replaced := false
		for i, a := range args {
			if strings.Contains(a, "%s") {
				args[i], replaced = strings.ReplaceAll(a, "%s", url), true
			}
		}
		if !replaced {
			args = append(args, url)
		}
		cmds = append(cmds, args)
	}
	switch goos {
	case "darwin":
		cmds = append(cmds, []string{"open", url})
	case "windows":
		cmds = append(cmds, []string{"rundll32", "url.dll,FileProtocolHandler", url})
	default:
		cmds = append(cmds, []string{"xdg-open", url})
	}
	var errs []error
	for _, args := range cmds {
		err := startBrowser(args)
		if err == nil {
			return nil
		}
		errs = append(errs, fmt.Errorf("%s: %w", args[0], err))
	}
	return fmt.Errorf("opening a browser: %w", errors.Join(errs...))
}

// startBrowser runs args and reports its failure if it exits unsuccessfully within browserStartGrace. A command
// still running then is a browser in the foreground: it is left to run (the user closes it), and a goroutine reaps
// it when it exits.
func startBrowser(args []string) error {
	cmd := exec.Command(args[0], args[1:]...) // stdin, stdout and stderr are /dev/null: a text browser fails fast
	if err := cmd.Start(); err != nil {
		return err
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	t := time.NewTimer(browserStartGrace)
	defer t.Stop()
	select {
	case err := <-done:
		return err
	case <-t.C:
		return nil
	}
}
