"""Entry point package: ``python -m hami_stack.device_plugin.nvidia [flags]`` (see :mod:`.__main__`)."""
