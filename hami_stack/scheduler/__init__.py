"""The scheduler extender: ``/filter``, ``/bind``, the webhook route, registration, metrics.

* :mod:`.wire` - ExtenderArgs / results with Go field names.
* :mod:`.cache` - usage cache (informer-fed, incremental) and init-container collapse.
* :mod:`.quota` - ResourceQuota limits on device memory and cores.
* :mod:`.decide` - the pure fit/score/choose decision.
* :mod:`.extender` - filter and bind (reserve, annotate, lock, bind).
* :mod:`.nodelock` - applying the node lock through the API.
* :mod:`.registration` - handshake/health loop and Lease-based leader awareness.
* :mod:`.recorder` - pod events. :mod:`.metrics` - Prometheus families.
* :mod:`.server` - HTTP(S) routes and the process wiring; :mod:`.cli` - flags.
"""

from .cache import UsageCache
from .extender import Extender, ExtenderOptions
from .quota import QuotaCache
from .server import SchedulerService, ServiceConfig, make_app
from .wire import decode_bind_args, decode_filter_args

__all__ = [
    "Extender",
    "ExtenderOptions",
    "QuotaCache",
    "SchedulerService",
    "ServiceConfig",
    "UsageCache",
    "decode_bind_args",
    "decode_filter_args",
    "make_app",
]
