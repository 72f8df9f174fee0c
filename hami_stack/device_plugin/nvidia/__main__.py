"""``python -m hami_stack.device_plugin.nvidia``: run the NVIDIA device plugin until SIGTERM/SIGINT."""

from __future__ import annotations

import logging
import signal
import sys
import threading

from kubeclient.client import Kube

from ..nvml import NvmlUnavailable
from ..options import OptionsError, resolve
from ..plugin import NvidiaDevicePlugin


def main(argv: list[str] | None = None) -> int:
    try:
        opts = resolve(sys.argv[1:] if argv is None else argv)
    except OptionsError as e:
        print(f"Error: {e}", file=sys.stderr)
        return 1
    logging.basicConfig(
        level=logging.DEBUG if opts.verbosity >= 5 else logging.INFO,
        format="%(asctime)s %(levelname).1s %(name)s] %(message)s",
        stream=sys.stderr,
    )
    kube = Kube.from_config(opts.kubeconfig, user_agent="hami-device-plugin")
    plugin = NvidiaDevicePlugin(opts, kube)
    done = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: done.set())
    signal.signal(signal.SIGINT, lambda *_: done.set())
    try:
        plugin.start()
    except NvmlUnavailable as e:
        logging.getLogger("hami.device-plugin").error("%s", e)
        if opts.fail_on_init_error:
            return 1
        done.wait()  # like NVIDIA's plugin without --fail-on-init-error: idle, advertise nothing
        return 0
    done.wait()
    plugin.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
