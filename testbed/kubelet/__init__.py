"""One node run by the real kubelet of a minor, with Debian's containerd and runc (issue 16, stretch).

``build`` compiles ``cmd/kubelet`` of the release whose control plane :mod:`testbed.controlplane`
built, ``images`` writes the node's images (a static pause and busybox) as OCI archives without a
registry, ``node`` runs containerd and the kubelet against a ``testbed up --control-plane real``
cluster. See README.md beside this file.
"""
