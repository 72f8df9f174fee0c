"""HAMi hami-core mode for Ascend: the in-container NPU memory limiter (``libvnpu.so``, ``vnpu.c``)."""
