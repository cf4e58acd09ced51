package kubeenv

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strconv"
)

// CompactEtcd writes a key outside the API server's prefix, so that etcd's revision moves past every
// resourceVersion a client has seen, and compacts etcd's history up to that revision: a watch resumed from an
// older resourceVersion then ends with 410 Gone and its client must list again. It uses etcd's JSON gateway and
// returns the compacted revision. etcd must be running.
func (e *Env) CompactEtcd(ctx context.Context) (int64, error) {
	var put struct {
		Header struct {
			Revision string `json:"revision"`
		} `json:"header"`
	}
	key := base64.StdEncoding.EncodeToString([]byte("/kubeenv/compaction-marker"))
	if err := e.etcdCall(ctx, "/v3/kv/put", map[string]any{"key": key, "value": key}, &put); err != nil {
		return 0, err
	}
	rev, err := strconv.ParseInt(put.Header.Revision, 10, 64)
	if err != nil {
		return 0, fmt.Errorf("kubeenv: etcd put answered revision %q", put.Header.Revision)
	}
	if err := e.etcdCall(ctx, "/v3/kv/compaction", map[string]any{"revision": rev, "physical": true}, nil); err != nil {
		return 0, err
	}
	return rev, nil
}

func (e *Env) etcdCall(ctx context.Context, path string, req, resp any) error {
	body, err := json.Marshal(req)
	if err != nil {
		return err
	}
	r, err := http.NewRequestWithContext(ctx, http.MethodPost, e.EtcdURL+path, bytes.NewReader(body))
	if err != nil {
		return err
	}
	r.Header.Set("Content-Type", "application/json")
	res, err := http.DefaultClient.Do(r)
	if err != nil {
		return fmt.Errorf("kubeenv: etcd %s: %w", path, err)
	}
	defer res.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(res.Body, 64<<10))
	if res.StatusCode != http.StatusOK {
		return fmt.Errorf("kubeenv: etcd %s: %s: %s", path, res.Status, b)
	}
	if resp == nil {
		return nil
	}
	return json.Unmarshal(b, resp)
}
