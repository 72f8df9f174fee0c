"""An existing cluster with HAMi installed (ours or upstream), reached through a kubeconfig."""

from __future__ import annotations

import os

from conformance.backends import BackendError, ClusterInfo, Options, preflight


class KubeconfigBackend:
    name = "kubeconfig"

    def provision(self, opts: Options) -> ClusterInfo:
        path = opts.kubeconfig or os.environ.get("KUBECONFIG")
        if not path:
            raise BackendError("--cluster kubeconfig needs --kubeconfig PATH (or $KUBECONFIG)")
        if not os.path.isfile(path):
            raise BackendError(f"kubeconfig {path} does not exist")
        kube = preflight.connect(path)
        try:
            version, vendors = preflight.check(
                kube, where=f"kubeconfig {path}", namespace=opts.hami_namespace, vendor=opts.vendor
            )
        finally:
            kube.close()
        from conformance.backends.testbed import testbed_control_plane

        # a testbed reached by its kubeconfig (the self-test's fault cells): the harness then knows
        # whether its scheduler is the emulated one, which retries a refused bind at once
        control_plane = testbed_control_plane(path)
        return ClusterInfo(
            backend=self.name,
            kubeconfig=os.path.abspath(path),
            minor=preflight.served_minor(version),
            git_version=str(version.get("gitVersion", "")),
            hami_namespace=opts.hami_namespace,
            scheduler_name=opts.scheduler_name,
            vendors=sorted(vendors),
            system={"controlPlane": control_plane} if control_plane else {},
        )

    def teardown(self, info: ClusterInfo) -> None:
        """Someone else's cluster: nothing to tear down (each test deletes its own namespace)."""
