"""An emulated multi-host lab on this machine, reached by Ansible over real SSH (``hosts.py``)."""

from .hosts import Lab, LabError, LabHost, LabSpec, load_spec

__all__ = ["Lab", "LabError", "LabHost", "LabSpec", "load_spec"]
