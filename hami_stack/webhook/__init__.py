"""The mutating admission webhook: :func:`admit` decides, :mod:`.server` serves it over TLS."""

from .admit import AdmissionResponse, WebhookConfig, admit
from .server import WebhookServer, add_routes, handle_review, make_app

__all__ = [
    "AdmissionResponse",
    "WebhookConfig",
    "WebhookServer",
    "add_routes",
    "admit",
    "handle_review",
    "make_app",
]
