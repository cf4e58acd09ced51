// Command gen compiles the repository's .proto files with a pure-Go compiler (protocompile) and has protoc-gen-go
// write the Go code, so `make proto` needs no protoc binary. It plays protoc's part of the plugin protocol: it
// builds the CodeGeneratorRequest protoc would send, runs protoc-gen-go (`go tool protoc-gen-go`, declared in this
// module's go.mod) with it on stdin and writes the files of the CodeGeneratorResponse. protoc-gen-go's code
// generator has no public Go API; the plugin protocol is its public interface. Every version is pinned by this
// module's go.mod, which is separate from the main module so the compiler never becomes a dependency of kedge or
// winch.
//
// Usage, from this directory: go run . -root DIR file.proto...   (paths relative to DIR; outputs are written next to
// the inputs)
package main

import (
	"bytes"
	"context"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"

	"github.com/bufbuild/protocompile"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protodesc"
	"google.golang.org/protobuf/types/pluginpb"
)

func main() {
	root := flag.String("root", ".", "import root of the .proto files")
	module := flag.String("module", "", "Go module path; generated files go to <root>/<go_package minus module>")
	flag.Parse()
	if err := run(*root, *module, flag.Args()); err != nil {
		fmt.Fprintln(os.Stderr, "proto/gen:", err)
		os.Exit(1)
	}
}

func run(root, module string, names []string) error {
	if len(names) == 0 {
		return fmt.Errorf("no .proto files given")
	}
	c := protocompile.Compiler{
		Resolver:       protocompile.WithStandardImports(&protocompile.SourceResolver{ImportPaths: []string{root}}),
		SourceInfoMode: protocompile.SourceInfoStandard,
	}
	files, err := c.Compile(context.Background(), names...)
	if err != nil {
		return err
	}
	req := &pluginpb.CodeGeneratorRequest{FileToGenerate: names, Parameter: proto.String("module=" + module)}
	seen := map[string]bool{}
	for _, f := range files {
		// Dependencies first, as protoc orders them.
		imports := f.Imports()
		for i := 0; i < imports.Len(); i++ {
			dep := protodesc.ToFileDescriptorProto(imports.Get(i).FileDescriptor)
			if !seen[dep.GetName()] {
				seen[dep.GetName()] = true
				req.ProtoFile = append(req.ProtoFile, dep)
			}
		}
		fd := protodesc.ToFileDescriptorProto(f)
		if !seen[fd.GetName()] {
			seen[fd.GetName()] = true
			req.ProtoFile = append(req.ProtoFile, fd)
		}
	}
	resp, err := runPlugin(req)
	if err != nil {
		return err
	}
	if resp.Error != nil {
		return fmt.Errorf("%s", resp.GetError())
	}
	for _, out := range resp.File {
		path := filepath.Join(root, strings.TrimPrefix(out.GetName(), "/"))
		if err := os.WriteFile(path, []byte(out.GetContent()), 0o644); err != nil {
			return err
		}
	}
	return nil
}

// runPlugin runs protoc-gen-go, at the version this module's go.mod pins, with req and returns its response.
func runPlugin(req *pluginpb.CodeGeneratorRequest) (*pluginpb.CodeGeneratorResponse, error) {
	in, err := proto.Marshal(req)
	if err != nil {
		return nil, err
	}
	var out, stderr bytes.Buffer
	cmd := exec.Command("go", "tool", "protoc-gen-go")
	cmd.Stdin, cmd.Stdout, cmd.Stderr = bytes.NewReader(in), &out, &stderr
	if err := cmd.Run(); err != nil {
		return nil, fmt.Errorf("running protoc-gen-go: %w\n%s", err, stderr.Bytes())
	}
	resp := &pluginpb.CodeGeneratorResponse{}
	if err := proto.Unmarshal(out.Bytes(), resp); err != nil {
		return nil, fmt.Errorf("reading protoc-gen-go's response: %w", err)
	}
	return resp, nil
}
