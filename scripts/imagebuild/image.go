package main

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"path"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// The image's layout. distroless's static:nonroot, the Dockerfile's base, has the same user, group, home and CA path.
const (
	binPath  = "/usr/local/bin"
	caPath   = "/etc/ssl/certs/ca-certificates.crt"
	nonroot  = 65532
	homePath = "/home/nonroot"
	envPath  = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
)

// binaries are the programs the image carries, under binPath; the first is the entrypoint.
func binaries() []string { return []string{"kedge", "winch"} }

// ports are kedge's default listener ports (--server_http_port, --server_http_tls_port, --server_grpc_tls_port); the
// test compares them with kedge's flag defaults. The tool does not import kedge's config, so that building it
// compiles little more than go-containerregistry.
func ports() []int { return []int{8080, 8443, 8444} }

// labels are the image's OCI annotations-as-labels.
type labels struct {
	Version, Revision, Source string
}

func (l labels) m() map[string]string {
	return map[string]string{
		"org.opencontainers.image.title":    "kedge",
		"org.opencontainers.image.version":  l.Version,
		"org.opencontainers.image.revision": l.Revision,
		"org.opencontainers.image.source":   l.Source,
		"org.opencontainers.image.licenses": "Apache-2.0",
	}
}

// shape is what this tool's image and the Dockerfile's final stage must agree on; the test compares them.
type shape struct {
	User         string
	Entrypoint   []string
	ExposedPorts []string // "8080/tcp", sorted
	Files        []string // the binaries' paths, sorted
	Labels       []string // label keys, sorted
}

// imageShape is the image's user, entrypoint, ports, binaries and label keys.
func imageShape() shape {
	s := shape{
		User:       strconv.Itoa(nonroot) + ":" + strconv.Itoa(nonroot),
		Entrypoint: []string{path.Join(binPath, binaries()[0])},
	}
	for _, p := range ports() {
		s.ExposedPorts = append(s.ExposedPorts, strconv.Itoa(p)+"/tcp")
	}
	for _, b := range binaries() {
		s.Files = append(s.Files, path.Join(binPath, b))
	}
	for k := range (labels{}).m() {
		s.Labels = append(s.Labels, k)
	}
	slices.Sort(s.ExposedPorts)
	slices.Sort(s.Files)
	slices.Sort(s.Labels)
	return s
}

// inputs are everything the image is made of; equal inputs give an equal image digest.
type inputs struct {
	Binaries map[string][]byte // by name, as binaries() lists them
	CACerts  []byte            // PEM bundle
	Labels   labels
	Arch     string
	Created  time.Time
}

// assemble makes the image: a base layer (users, groups, home, /tmp, CA bundle) and a layer with the binaries, an
// OCI manifest and config.
func assemble(in inputs) (v1.Image, error) {
	if err := checkCACerts(in.CACerts); err != nil {
		return nil, err
	}
	s := imageShape()
	exposed := map[string]struct{}{}
	for _, p := range s.ExposedPorts {
		exposed[p] = struct{}{}
	}
	cfg := &v1.ConfigFile{
		Architecture: in.Arch,
		OS:           "linux",
		Created:      v1.Time{Time: in.Created},
		RootFS:       v1.RootFS{Type: "layers"},
		Config: v1.Config{
			User:         s.User,
			Entrypoint:   s.Entrypoint,
			ExposedPorts: exposed,
			Env:          []string{envPath, "SSL_CERT_FILE=" + caPath},
			WorkingDir:   "/",
			Labels:       in.Labels.m(),
		},
	}
	img := mutate.ConfigMediaType(mutate.MediaType(empty.Image, types.OCIManifestSchema1), types.OCIConfigJSON)
	img, err := mutate.ConfigFile(img, cfg)
	if err != nil {
		return nil, err
	}

	base := &layerWriter{created: in.Created}
	for _, d := range []string{"etc", "etc/ssl", "etc/ssl/certs", "home", "usr", "usr/local", "usr/local/bin"} {
		base.dir(d, 0o755, 0)
	}
	base.dir(strings.TrimPrefix(homePath, "/"), 0o700, nonroot)
	base.dir("tmp", 0o1777, 0)
	base.file("etc/passwd", 0o644, []byte(fmt.Sprintf("root:x:0:0:root:/root:/sbin/nologin\nnonroot:x:%d:%d:nonroot:%s:/sbin/nologin\n", nonroot, nonroot, homePath)))
	base.file("etc/group", 0o644, []byte(fmt.Sprintf("root:x:0:\nnonroot:x:%d:\n", nonroot)))
	base.file(strings.TrimPrefix(caPath, "/"), 0o644, in.CACerts)

	bins := &layerWriter{created: in.Created}
	for _, b := range binaries() {
		raw, ok := in.Binaries[b]
		if !ok {
			return nil, fmt.Errorf("no %s binary", b)
		}
		bins.file(strings.TrimPrefix(path.Join(binPath, b), "/"), 0o755, raw)
	}

	var adds []mutate.Addendum
	for _, l := range []struct {
		w   *layerWriter
		why string
	}{
		{base, "imagebuild: users and groups (nonroot 65532), /home/nonroot, /tmp, CA certificates"},
		{bins, "imagebuild: " + strings.Join(s.Files, ", ")},
	} {
		layer, err := l.w.layer()
		if err != nil {
			return nil, err
		}
		adds = append(adds, mutate.Addendum{Layer: layer, History: v1.History{Created: v1.Time{Time: in.Created}, CreatedBy: l.why}})
	}
	return mutate.Append(img, adds...)
}

// checkCACerts accepts a PEM bundle of certificates only: at least one, and no private key.
func checkCACerts(pemData []byte) error {
	n := 0
	for rest := pemData; ; {
		var block *pem.Block
		block, rest = pem.Decode(rest)
		if block == nil {
			break
		}
		if block.Type != "CERTIFICATE" {
			return fmt.Errorf("CA certificates: a %q block, want only CERTIFICATE", block.Type)
		}
		if _, err := x509.ParseCertificate(block.Bytes); err != nil {
			return fmt.Errorf("CA certificates: %w", err)
		}
		n++
	}
	if n == 0 {
		return errors.New("CA certificates: no certificate in the bundle")
	}
	return nil
}

// layerWriter builds one layer's tar in memory with fixed times, owners and formats, in the order of the calls, so
// that the same files give the same bytes.
type layerWriter struct {
	created time.Time
	buf     bytes.Buffer
	tw      *tar.Writer
	err     error
}

func (l *layerWriter) add(h *tar.Header, data []byte) {
	if l.tw == nil {
		l.tw = tar.NewWriter(&l.buf)
	}
	if l.err != nil {
		return
	}
	h.ModTime, h.Format = l.created, tar.FormatPAX
	if l.err = l.tw.WriteHeader(h); l.err == nil && len(data) > 0 {
		_, l.err = l.tw.Write(data)
	}
}

func (l *layerWriter) dir(name string, mode int64, owner int) {
	l.add(&tar.Header{Typeflag: tar.TypeDir, Name: name + "/", Mode: mode, Uid: owner, Gid: owner}, nil)
}

func (l *layerWriter) file(name string, mode int64, data []byte) {
	l.add(&tar.Header{Typeflag: tar.TypeReg, Name: name, Mode: mode, Size: int64(len(data))}, data)
}

// layer closes the tar, compresses it once (gzip output depends only on its input and level) and returns it as an
// OCI layer.
func (l *layerWriter) layer() (v1.Layer, error) {
	if l.tw == nil {
		return nil, errors.New("empty layer")
	}
	if l.err != nil {
		return nil, l.err
	}
	if err := l.tw.Close(); err != nil {
		return nil, err
	}
	var gz bytes.Buffer
	zw, err := gzip.NewWriterLevel(&gz, gzip.DefaultCompression)
	if err != nil {
		return nil, err
	}
	if _, err := zw.Write(l.buf.Bytes()); err != nil {
		return nil, err
	}
	if err := zw.Close(); err != nil {
		return nil, err
	}
	compressed := gz.Bytes()
	return tarball.LayerFromOpener(func() (io.ReadCloser, error) {
		return io.NopCloser(bytes.NewReader(compressed)), nil
	}, tarball.WithMediaType(types.OCILayer))
}

// writeTarball writes img as a docker-loadable tarball tagged ref and returns the image's manifest digest.
func writeTarball(out, ref string, img v1.Image) (v1.Hash, error) {
	tag, err := name.NewTag(ref)
	if err != nil {
		return v1.Hash{}, fmt.Errorf("image name: %w", err)
	}
	if err := tarball.WriteToFile(out, tag, img); err != nil {
		return v1.Hash{}, err
	}
	return img.Digest()
}
