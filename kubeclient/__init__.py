"""How the project's Kubernetes components talk to an apiserver.

The testbed's scheduler, controllers and node agents and the stack's extender and device plugins
all use it; it depends on nothing of either.

They use the official ``kubernetes`` client's configuration and transport (kubeconfig or in-cluster
service-account credentials), with JSON dicts instead of generated models on hot paths.
"""
