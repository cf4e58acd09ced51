package e2e

import (
	"fmt"
	"os"
	"os/exec"
	"testing"
)

// benchNginxConf is nginx as a TLS reverse proxy on one port: HTTP/1.1 and HTTP/2 to a plaintext HTTP/1.1 upstream,
// and gRPC (grpc_pass) to a plaintext gRPC upstream, both with pooled upstream connections. Every path nginx
// writes is under the prefix directory, so it runs without root. worker_processes auto is one worker per core.
// %[1]s prefix directory, %[2]s echo upstream, %[3]s listen address, %[4]s/%[5]s certificate and key,
// %[6]d connections per worker, %[7]d open files per worker, %[8]s gRPC upstream.
const benchNginxConf = `worker_processes auto;
worker_rlimit_nofile %[7]d;
daemon off;
pid %[1]s/nginx.pid;
error_log %[1]s/error.log warn;
events { worker_connections %[6]d; }
http {
  access_log off;
  client_body_temp_path %[1]s/client_body;
  proxy_temp_path %[1]s/proxy;
  fastcgi_temp_path %[1]s/fastcgi;
  uwsgi_temp_path %[1]s/uwsgi;
  scgi_temp_path %[1]s/scgi;
  upstream echo {
    server %[2]s;
    keepalive 128;
    keepalive_requests 1000000;
  }
  upstream greeter {
    server %[8]s;
    keepalive 128;
    keepalive_requests 1000000;
  }
  server {
    listen %[3]s ssl http2;
    ssl_certificate %[4]s;
    ssl_certificate_key %[5]s;
    ssl_protocols TLSv1.2 TLSv1.3;
    keepalive_requests 1000000;
    location / {
      proxy_pass http://echo;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_set_header Host $host;
    }
    location /grpc.testing.TestService/ {
      grpc_pass grpc://greeter;
    }
  }
}
`

// benchNginxParams is what an nginx of the benchmarks is configured with.
type benchNginxParams struct {
	cert, key     string // server certificate and key files
	echo, greeter string // the plaintext HTTP and gRPC upstreams
	conns         int    // idle client connections it must hold besides the load's
}

// startBenchNginx runs nginx, when installed, in a fresh prefix directory under dir and waits until it accepts
// connections. When nginx is not installed it returns the reason its cases are skipped instead.
func startBenchNginx(tb testing.TB, dir string, c benchNginxParams) (p *benchProc, addr, skip string) {
	tb.Helper()
	path, err := exec.LookPath("nginx")
	if err != nil {
		if path, err = exec.LookPath("/usr/sbin/nginx"); err != nil {
			return nil, "", "nginx is not installed (Debian package nginx: apt-get install -y nginx)"
		}
	}
	prefix, err := os.MkdirTemp(dir, "nginx-")
	if err != nil {
		tb.Fatal(err)
	}
	addr = fmt.Sprintf("127.0.0.1:%d", benchPorts(tb, 1)[0])
	// Every worker may get all the idle connections, and each proxied one may hold an upstream connection too.
	perWorker := c.conns + 1024
	conf := benchWrite(tb, prefix, "nginx.conf",
		fmt.Sprintf(benchNginxConf, prefix, c.echo, addr, c.cert, c.key, perWorker, 2*perWorker+64, c.greeter))
	p = startBenchProc(tb, prefix, path, "-p", prefix, "-c", conf, "-e", prefix+"/error.log")
	p.waitDial(tb, addr)
	return p, addr, ""
}
