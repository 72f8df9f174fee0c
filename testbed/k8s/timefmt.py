"""The two timestamp forms of the Kubernetes API: ``Time`` (RFC 3339, seconds) and ``MicroTime``."""

from __future__ import annotations

import datetime as dt


def now() -> str:
    """``metav1.Time`` of now: creationTimestamp, condition transitions, lastTimestamp."""
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def now_micro() -> str:
    """``metav1.MicroTime`` of now: Lease renewTime, events.k8s.io eventTime."""
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
