package main

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"syscall"
	"time"
)

// process is one started binary; its output goes to a log file shown when something fails.
type process struct {
	name    string
	logPath string
	cmd     *exec.Cmd
	done    chan struct{}
	err     error
}

func (p *process) hasExited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// processes owns every binary the demo starts and stops them all, whatever happens.
type processes struct {
	dir   string // working directory of every process: the tutorial's files are there
	bin   string // absolute directory of the kedge and winch binaries
	mu    sync.Mutex
	procs []*process
	dead  chan *process
}

func (ps *processes) start(c command, logPath string) (*process, error) {
	log, err := os.Create(logPath)
	if err != nil {
		return nil, err
	}
	path := filepath.Join(ps.bin, c.name)
	p := &process{name: c.name, logPath: logPath, cmd: exec.Command(path, c.args()...), done: make(chan struct{})}
	p.cmd.Dir = ps.dir
	p.cmd.Stdout, p.cmd.Stderr = log, log
	// Its own process group: the terminal's Ctrl-C goes to the demo only, which then stops the binaries itself.
	p.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := p.cmd.Start(); err != nil {
		log.Close()
		return nil, fmt.Errorf("starting %s (did `make build` run?): %w", path, err)
	}
	ps.mu.Lock()
	if ps.dead == nil {
		ps.dead = make(chan *process, 4)
	}
	ps.procs = append(ps.procs, p)
	dead := ps.dead
	ps.mu.Unlock()
	go func() {
		p.err = p.cmd.Wait()
		log.Close()
		close(p.done)
		dead <- p
	}()
	return p, nil
}

// exited delivers each process that ends.
func (ps *processes) exited() <-chan *process {
	ps.mu.Lock()
	defer ps.mu.Unlock()
	if ps.dead == nil {
		ps.dead = make(chan *process, 4)
	}
	return ps.dead
}

// stopAll sends SIGTERM to every running process and waits up to 25 s; it reports processes that did not exit
// cleanly. Safe to call more than once.
func (ps *processes) stopAll() error {
	ps.mu.Lock()
	procs := ps.procs
	ps.procs = nil
	ps.mu.Unlock()
	var errs []error
	for _, p := range procs {
		if !p.hasExited() {
			_ = p.cmd.Process.Signal(syscall.SIGTERM)
		}
	}
	for _, p := range procs {
		select {
		case <-p.done:
			if p.err != nil {
				errs = append(errs, fmt.Errorf("%s exited with %v (log %s)", p.name, p.err, p.logPath))
			}
		case <-time.After(25 * time.Second):
			_ = p.cmd.Process.Kill()
			<-p.done
			errs = append(errs, fmt.Errorf("%s did not stop within 25s of SIGTERM", p.name))
		}
	}
	return errors.Join(errs...)
}

// withLogs appends the tail of every process log to err, so a failure explains itself.
func (ps *processes) withLogs(err error) error {
	ps.mu.Lock()
	defer ps.mu.Unlock()
	msg := err.Error()
	for _, p := range ps.procs {
		b, _ := os.ReadFile(p.logPath)
		if len(b) > 4000 {
			b = b[len(b)-4000:]
		}
		msg += fmt.Sprintf("\n---- %s log (%s) ----\n%s", p.name, p.logPath, b)
	}
	return errors.New(msg)
}

func get(ctx context.Context, url string) (bool, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return false, err
	}
	c := &http.Client{Transport: &http.Transport{Proxy: nil}, Timeout: 2 * time.Second}
	resp, err := c.Do(req)
	if err != nil {
		return false, err
	}
	resp.Body.Close()
	return resp.StatusCode == http.StatusOK, nil
}
