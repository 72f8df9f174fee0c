"""Upstream HAMi's published unit-test vectors (v2.10), rewritten as our own tables.

Each module names the upstream test it takes its inputs and expected outputs from. Where our
behaviour deliberately differs, the case is marked and ``hami_stack/UPSTREAM-DIFFERENCES.md`` says why.
"""
