"""A generic, data-driven device plugin for the families beyond NVIDIA and Ascend.

A family is a :class:`~.specs.PluginSpec` row (which hardware files, which register encoding, how
many slots per device); :mod:`.plugin` does the rest the same way for every family.
"""
