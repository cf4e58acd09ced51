package wire_test

import (
	"testing"

	"github.com/kedge-proxy/kedge/pkg/shared/wire"
)

// TestKedgeOwned is not parallel: it measures allocations.
func TestKedgeOwned(t *testing.T) {
	tests := []struct {
		name string
		want bool
	}{
		{wire.HeaderKedgeIdentity, true},
		{wire.MetadataKedgeIdentity, true},
		{"X-KEDGE-IDENTITY", true},
		{wire.HeaderKedgeBackendName, true},
		{wire.HeaderKedgeError, true},
		{wire.MetadataKedgeErrorType, true},
		{wire.HeaderRequestID, true}, // removed, then set by kedge
		{"X-Kedge-", true},
		{wire.HeaderInfoLogs, false},
		{"x-kedge-info-logs", false},
		{"X-KEDGE-INFO-LOGS", false},
		{"X-Kedge-Info-Logs2", true},
		{"X-Kedged-Identity", false},
		{"X-Kedge", false},
		{"Authorization", false},
		{"", false},
	}
	for _, tt := range tests {
		if got := wire.KedgeOwned(tt.name); got != tt.want {
			t.Errorf("KedgeOwned(%q) = %v, want %v", tt.name, got, tt.want)
		}
	}
	if n := testing.AllocsPerRun(100, func() { wire.KedgeOwned("X-Kedge-Identity") }); n != 0 {
		t.Errorf("KedgeOwned allocates %v times", n)
	}
}
