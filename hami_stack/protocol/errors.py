"""The one exception type every protocol codec raises.

A codec either returns a complete value or raises :class:`ProtocolError`; it never returns a
partially decoded value. The message names what was wrong and where, so the caller can log it
and skip the whole annotation.
"""

from __future__ import annotations


class ProtocolError(ValueError):
    """A value on the wire (annotation, label, resource quantity) that does not follow the contract."""
