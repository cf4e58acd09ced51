package config

import (
	"strconv"
	"strings"
	"testing"
)

func TestGRPCStreamWindowFlag(t *testing.T) {
	t.Parallel()
	c, _ := parseFlags(t)
	if err := c.Validate(); err != nil || c.GRPCStreamWindow != DefaultGRPCStreamWindow {
		t.Fatalf("default: window %d, %v; want %d and no error", c.GRPCStreamWindow, err, DefaultGRPCStreamWindow)
	}
	for _, ok := range []string{"0", "65535", "4194304"} {
		c, _ := parseFlags(t, "--server_grpc_stream_window_bytes="+ok)
		if err := c.Validate(); err != nil {
			t.Errorf("--server_grpc_stream_window_bytes=%s: %v", ok, err)
		}
	}
	bad := []string{"1000", "-1"}
	if strconv.IntSize == 64 {
		bad = append(bad, "3000000000") // over int32: grpc-go takes the window as one
	}
	for _, bad := range bad {
		c, _ := parseFlags(t, "--server_grpc_stream_window_bytes="+bad)
		err := c.Validate()
		if err == nil || !strings.Contains(err.Error(), "--server_grpc_stream_window_bytes: "+bad+" is not 0 or between 65535") {
			t.Errorf("--server_grpc_stream_window_bytes=%s: %v, want it refused with the flag's name", bad, err)
		}
	}
}
