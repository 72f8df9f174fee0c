"""The real Kubernetes control plane, built from the Go module proxy and run beside the node agents.

- :mod:`.gomod`: writes the build module of a release (pure text; unit-tested without a build).
- :mod:`.releases`: the latest served patch of each minor, and the cache layout.
- :mod:`.build`: builds kube-apiserver, kube-controller-manager and kube-scheduler into
  ``~/.cache/hami-conformance/k8s/<version>/`` (``python -m testbed.controlplane build 1.33``).
- :mod:`.etcd`: the etcd each minor runs on.
- :mod:`.cluster`: starts etcd and the three commands with kubeadm's flags for the minor
  (``python -m testbed up --control-plane real``).
"""
