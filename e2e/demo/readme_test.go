package main

import (
	"os"
	"strings"
	"testing"
)

// TestREADMETutorialIsTheDemo fails when the README's tutorial and the commands the demo runs (with its default
// ports) drift apart: every command the demo shows must appear in the README exactly, line breaks included.
func TestREADMETutorialIsTheDemo(t *testing.T) {
	b, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	readme := string(b)
	// The README indents its code blocks by three spaces (list items); the demo prints them flush left.
	readme = strings.ReplaceAll(readme, "\n   ", "\n")
	shown := []string{kedgeCommand(defaultPorts).shell(), winchCommand(defaultPorts).shell()}
	for _, s := range tutorialSteps(defaultPorts) {
		shown = append(shown, s.shell)
	}
	for _, name := range []string{fileKedgeCert, fileKedgeKey, fileKedgeCA, fileBackendCA, fileKubeconfig, fileProxyToken} {
		shown = append(shown, "`"+name+"`")
	}
	for _, s := range shown {
		if !strings.Contains(readme, s) {
			t.Errorf("README.md's tutorial lacks the demo's\n%s", s)
		}
	}
}
