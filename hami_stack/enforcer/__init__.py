"""In-container enforcement: the C LD_PRELOAD shim (libvgpu.so) and its build."""

from hami_stack.enforcer.build import BuildError, ensure_built, layout_program

__all__ = ["BuildError", "ensure_built", "layout_program"]
