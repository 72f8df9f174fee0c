"""Images of the stack: the Dockerfile for real clusters, and the testbed's mapping of the chart's images.

* ``Dockerfile`` + ``bin/`` - the stack image and its entry points (``scheduler``, ``nvidia-device-plugin``,
  ``vGPUmonitor``, ``hami-install-shim``).
* :mod:`.testbed_catalog` - image catalog entries for testbed node agents (``register_all()`` in-process,
  or ``write_catalog(path)`` for ``$TESTBED_IMAGE_CATALOG``).
"""
