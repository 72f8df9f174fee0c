"""Kubernetes value types shared by the testbed's components (apiserver, scheduler, node agent)."""
