"""Upstream HAMi as a second system under test: its binaries built from source, cached per version.

``python -m testbed.upstream build v2.10.0|latest [--source GIT_DIR]`` (see ``build.py``). The
module proxy is asked first; see ``source.py`` for what stands in when it refuses the module.
"""
