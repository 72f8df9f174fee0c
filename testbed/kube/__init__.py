"""How testbed components (scheduler, controllers, node agents) talk to an apiserver.

They use the official ``kubernetes`` client's configuration and transport (kubeconfig or in-cluster
service-account credentials), with JSON dicts instead of generated models on hot paths.
"""
