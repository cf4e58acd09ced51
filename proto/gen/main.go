// Command gen compiles the repository's .proto files with a pure-Go compiler (protocompile) and writes the Go code
// that protoc-gen-go would write, so `make proto` needs no protoc binary. Its versions are pinned by this module's
// go.mod, which is separate from the main module so the compiler never becomes a dependency of kedge or winch.
//
// Usage: go run . -root DIR file.proto...   (paths relative to DIR; outputs are written next to the inputs)
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/bufbuild/protocompile"
	"google.golang.org/protobuf/cmd/protoc-gen-go/internal_gengo"
	"google.golang.org/protobuf/compiler/protogen"
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
	plugin, err := protogen.Options{}.New(req)
	if err != nil {
		return err
	}
	for _, f := range plugin.Files {
		if f.Generate {
			internal_gengo.GenerateFile(plugin, f)
		}
	}
	resp := plugin.Response()
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
