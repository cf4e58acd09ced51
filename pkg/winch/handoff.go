package winch

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"

	"github.com/kedge-proxy/kedge/pkg/shared/logging"
	"github.com/kedge-proxy/kedge/pkg/shared/wire"
	"github.com/kedge-proxy/kedge/pkg/winch/credentials"
)

// The login hand-off: `winch login NAME` finds a winch running on its HTTP port and sends
// POST /winch/login/NAME?flow=browser|device. The running winch answers 200 at once and streams JSON lines
// (loginEventType): the login's prompts as they happen, then one line with the outcome. The asking command shows
// the prompts on its own terminal and opens the browser there, so that a winch running in the background (no
// terminal, no desktop) is still usable. Errors before the login starts (bad flow) are a non-200 answer with
// X-Winch-Error. A request without "Accept: application/x-ndjson" (an older winch login) gets the old answer: text
// once the login ended.

// loginEventType is the Content-Type of the hand-off's answer.
const loginEventType = "application/x-ndjson"

// loginEvent is one line of the hand-off's answer: at most one field is set (the first line, which commits the
// answer, is empty).
type loginEvent struct {
	Prompt *credentials.Prompt `json:"prompt,omitempty"`
	Done   string              `json:"done,omitempty"`  // the login succeeded; a message for the user
	Error  string              `json:"error,omitempty"` // the login failed; what went wrong and what to do
}

// serveLogin runs a login for `winch login` and streams its prompts back (see above).
func (w *Winch) serveLogin(rw http.ResponseWriter, r *http.Request) {
	name := r.PathValue("name")
	flow, err := credentials.ParseFlow(r.URL.Query().Get("flow"))
	if err != nil {
		wire.WriteWinchError(rw, http.StatusBadRequest, wire.ErrAuthSource, err.Error())
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), loginTimeout)
	defer cancel()
	if !strings.Contains(r.Header.Get("Accept"), loginEventType) {
		w.serveLoginPlain(ctx, rw, name, flow)
		return
	}
	rw.Header().Set("Content-Type", loginEventType)
	rw.Header().Set("Cache-Control", "no-store")
	rw.WriteHeader(http.StatusOK)
	rc := http.NewResponseController(rw)
	enc := json.NewEncoder(rw)
	send := func(ev loginEvent) {
		if err := enc.Encode(ev); err == nil {
			_ = rc.Flush()
		}
	}
	send(loginEvent{}) // commits the answer, so that the asking command knows the login started
	opts := credentials.LoginOptions{Flow: flow, Prompt: func(p credentials.Prompt) {
		w.log.Info("login prompt handed to winch login", "auth_source", name, "device", p.Device)
		send(loginEvent{Prompt: &p})
	}}
	if err := w.snap.Load().creds.Login(ctx, name, opts); err != nil {
		w.log.Warn("login failed", "auth_source", name, logging.FieldError, err)
		send(loginEvent{Error: err.Error()})
		return
	}
	w.log.Info("logged in", "auth_source", name)
	send(loginEvent{Done: "logged in to " + name})
}

// serveLoginPlain answers a `winch login` from before the hand-off streamed (during an upgrade): the login's prompts
// go to this winch's log, and the answer is text once the login ended (502 with X-Winch-Error on failure).
func (w *Winch) serveLoginPlain(ctx context.Context, rw http.ResponseWriter, name string, flow credentials.Flow) {
	if err := w.snap.Load().creds.Login(ctx, name, credentials.LoginOptions{Flow: flow}); err != nil {
		w.log.Warn("login failed", "auth_source", name, logging.FieldError, err)
		wire.WriteWinchError(rw, http.StatusBadGateway, wire.ErrAuthSource, err.Error())
		return
	}
	w.log.Info("logged in", "auth_source", name)
	_, _ = io.WriteString(rw, "logged in to "+name+"\n")
}

// askLogin asks the winch running on cfg's HTTP address to log in to name, shows the prompts it hands back with
// opts.Prompt, and writes the outcome to out.
func askLogin(ctx context.Context, cfg Config, name string, opts credentials.LoginOptions, out io.Writer) error {
	ctx, cancel := context.WithTimeout(ctx, loginTimeout)
	defer cancel()
	addr := runningAddr(cfg)
	u := "http://" + addr + "/winch/login/" + url.PathEscape(name) + "?flow=" + opts.Flow.String()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, u, nil)
	if err != nil {
		return err
	}
	req.Header.Set("Accept", loginEventType)
	client := &http.Client{Transport: &http.Transport{Proxy: nil}}
	defer client.CloseIdleConnections()
	resp, err := client.Do(req)
	if err != nil {
		return fmt.Errorf("winch: asking the winch running on %s to log in to %q: %w", addr, name, err)
	}
	defer func() { _ = resp.Body.Close() }()
	if resp.StatusCode != http.StatusOK {
		body, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
		msg := resp.Header.Get(wire.HeaderWinchError)
		if msg == "" {
			msg = strings.TrimSpace(string(body))
		}
		return fmt.Errorf("winch: log in to %q: %s", name, msg)
	}
	if !strings.HasPrefix(resp.Header.Get("Content-Type"), loginEventType) { // a winch from before the streaming hand-off
		_, err := io.Copy(out, io.LimitReader(resp.Body, 64<<10))
		return err
	}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 0, 4096), 64<<10)
	for sc.Scan() {
		var ev loginEvent
		if err := json.Unmarshal(sc.Bytes(), &ev); err != nil {
			return fmt.Errorf("winch: log in to %q: the running winch answered %q", name, sc.Text())
		}
		switch {
		case ev.Prompt != nil:
			if opts.Prompt != nil {
				opts.Prompt(*ev.Prompt)
			}
		case ev.Error != "":
			return errors.New(ev.Error)
		case ev.Done != "":
			fmt.Fprintln(out, ev.Done)
			return nil
		}
	}
	if err := sc.Err(); err != nil {
		return fmt.Errorf("winch: log in to %q: reading the running winch's answer: %w", name, err)
	}
	return fmt.Errorf("winch: log in to %q: the running winch ended the login without an outcome", name)
}

// runningAddr is the address a winch running with cfg answers on from this machine.
func runningAddr(cfg Config) string {
	if ip := net.ParseIP(cfg.BindAddress); ip != nil && ip.IsUnspecified() {
		return net.JoinHostPort("127.0.0.1", fmt.Sprint(cfg.HTTPPort))
	}
	return cfg.HTTPAddr()
}
