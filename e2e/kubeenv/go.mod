module github.com/kedge-proxy/kedge/e2e/kubeenv

go 1.26.8
