# The kind workflow: see Bulwark work on a laptop with Docker and kind installed.
#   make kind-up image kind-load deploy   # cluster, snapshot CRDs + controller, image, install
#   make e2e                               # scenario tests against that cluster
#   make kind-down
CLUSTER ?= bulwark
IMAGE ?= bulwark:dev
# external-snapshotter release whose CRDs and snapshot-controller the cluster gets.
SNAPSHOTTER ?= v8.2.0
SNAPSHOTTER_URL = https://github.com/kubernetes-csi/external-snapshotter

.PHONY: kind-up image kind-load deploy e2e kind-down

kind-up:
	kind create cluster --name $(CLUSTER)
	kubectl apply -k "$(SNAPSHOTTER_URL)/client/config/crd?ref=$(SNAPSHOTTER)"
	kubectl apply -k "$(SNAPSHOTTER_URL)/deploy/kubernetes/snapshot-controller?ref=$(SNAPSHOTTER)"

image:
	docker build -t $(IMAGE) .

kind-load:
	kind load docker-image $(IMAGE) --name $(CLUSTER)

deploy:
	kubectl apply -k deploy/
	kubectl -n bulwark-system rollout status deployment/bulwark-controller --timeout=180s
	# The agent DaemonSet updates OnDelete, which `rollout status` does not follow.
	kubectl -n bulwark-system wait pod -l app.kubernetes.io/name=bulwark-agent --for=condition=Ready --timeout=180s

# The CSI scenario runs the CSI sidecars as local processes: point BULWARK_E2E_CSI_SIDECARS at a
# directory holding csi-provisioner, csi-snapshotter and csi-resizer to include it.
e2e:
	BULWARK_E2E=1 cargo test -p e2e -- --ignored --test-threads=1 \
	  $(if $(BULWARK_E2E_CSI_SIDECARS),,--skip pvc_written_backed_up_as_a_volume_snapshot)
	cargo test -p operator --test cluster --test cluster_flow -- --ignored --test-threads=1

kind-down:
	kind delete cluster --name $(CLUSTER)
