// Command refproxy is the reference the reliability catalog's throughput target is stated against: a plain
// net/http/httputil.ReverseProxy behind TLS (HTTP/1.1 and HTTP/2 by ALPN) in front of one plaintext upstream, with
// nothing else (no routing, auth, logging or metrics). BenchmarkProxy runs it beside kedge so that kedge's cost is
// measured against it on the same machine in the same run. It exits 0 on SIGTERM after draining.
package main

import (
	"context"
	"crypto/tls"
	"errors"
	"flag"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"os"
	"os/signal"
	"syscall"
	"time"
)

func main() {
	os.Exit(run(os.Args[1:]))
}

func run(args []string) int {
	fs := flag.NewFlagSet("refproxy", flag.ContinueOnError)
	listen := fs.String("listen", "127.0.0.1:0", "TLS listen address")
	certFile := fs.String("cert", "", "PEM server certificate")
	keyFile := fs.String("key", "", "PEM private key")
	upstream := fs.String("upstream", "", "plaintext upstream, host:port")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if *certFile == "" || *keyFile == "" || *upstream == "" {
		fmt.Fprintln(os.Stderr, "refproxy: -cert, -key and -upstream are required")
		return 2
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	if err := serve(ctx, *listen, *certFile, *keyFile, *upstream); err != nil {
		fmt.Fprintln(os.Stderr, "refproxy:", err)
		return 1
	}
	return 0
}

func serve(ctx context.Context, listen, certFile, keyFile, upstream string) error {
	cert, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		return fmt.Errorf("loading the certificate: %w", err)
	}
	target := &url.URL{Scheme: "http", Host: upstream}
	proxy := &httputil.ReverseProxy{
		Rewrite: func(r *httputil.ProxyRequest) {
			r.SetURL(target)
			r.Out.Host = r.In.Host
			r.SetXForwarded()
		},
		Transport: &http.Transport{
			DialContext:         (&net.Dialer{Timeout: 2 * time.Second}).DialContext,
			MaxIdleConnsPerHost: 256,
			IdleConnTimeout:     60 * time.Second,
		},
		ErrorLog: log.New(io.Discard, "", 0),
	}
	srv := &http.Server{
		Handler:           proxy,
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       120 * time.Second,
		TLSConfig:         &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12},
		ErrorLog:          log.New(io.Discard, "", 0),
	}
	ln, err := net.Listen("tcp", listen)
	if err != nil {
		return err
	}
	done := make(chan error, 1)
	go func() { done <- srv.ServeTLS(ln, "", "") }()
	select {
	case err := <-done:
		return err
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	err = srv.Shutdown(sctx)
	if serr := <-done; !errors.Is(serr, http.ErrServerClosed) {
		return serr
	}
	return err
}
