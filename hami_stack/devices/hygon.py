"""Hygon DCU (common word ``DCU``): the counted family plus what HAMi's DCU backend and plugin add.

Scheduler side (data in :data:`~hami_stack.devices.counted.HYGON`): ``hygon.com/dcunum`` /
``dcumem`` (MiB x ``memoryFactor``) / ``dcucores`` (default 100), the CSV register annotation
``hami.io/node-dcu-register`` with handshake ``hami.io/node-handshake-dcu``, type selection by
``hygon.com/use-dcutype`` / ``nouse-dcutype`` and UUID selection by ``hygon.com/use-gpuuuid`` /
``nouse-gpuuuid``.

Added here:

* admission: the count must be a whole number from 1 (a DCU pod that asks 0 DCUs is refused, not
  silently given none);
* Allocate, as HAMi's ``dcu-vgpu-device-plugin`` answers: the device nodes ``/dev/kfd``, ``/dev/mkfd``,
  ``/dev/dri/card<i>`` and ``/dev/dri/renderD<128+i>``, the driver mounts (``/opt/hygondriver`` from
  ``$HYGONPATH``, ``/opt/hyhal``) and, for a single partial device, a vdev config file under
  ``<hook>/vgpu/dcu/<podUID>_<ctr>_<dev>_<pipe>_<vdev>_<mask1>_<mask2>/`` mounted at
  ``/etc/vdev/docker/`` that limits memory (``mem: <n> MiB``) and compute units (``cu_count``/``cu_mask``).
  ``DCU_VISIBLE_DEVICES`` carries the device IDs (the emulated runtime and the probe read it).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

from .. import faults
from ..protocol.errors import ProtocolError
from .base import MAX_DEVICES_PER_CONTAINER as MAX_DEVICES
from .base import AllocateInput, ContainerAllocation, DeviceSpec, Mount, Obj, check_quantity
from .counted import HYGON, CountedFamily, CountedSpec

ZERO_FAULT = "webhook-hygon-zero-admitted"
VISIBLE_ENV = "DCU_VISIBLE_DEVICES"
VDEV_MOUNT = "/etc/vdev/docker/"
VDEV_FILE = "vdev0.conf"
DRIVER_MOUNTS = (("/opt/hygondriver", "HYGONPATH", "/opt/hygondriver"), ("/opt/hyhal", "", "/opt/hyhal"))
COMPUTE_UNITS = 60  # CUs of the emulated Z100-class DCU, when the plugin does not say


def device_index(uuid: str) -> int:
    """``DCU-<n>`` -> n (the plugin overrides :attr:`HygonFamily.indices` with the driver's view)."""
    tail = uuid.rsplit("-", 1)[-1]
    if not tail.isdigit():  # not card 0: a device nobody assigned
        raise ProtocolError(f"not a DCU device ID: {uuid!r} (want DCU-<index>)")
    return int(tail)


def cu_mask(cu_count: int, total: int) -> tuple[str, str]:
    """The low ``cu_count`` of ``total`` CUs as two 32-bit hex words (upstream's mask1/mask2 layout)."""
    bits = (1 << min(cu_count, total)) - 1
    return f"0x{bits & 0xFFFFFFFF:08x}", f"0x{(bits >> 32) & 0xFFFFFFFF:08x}"


class HygonFamily(CountedFamily):
    def __init__(self, spec: CountedSpec = HYGON, section: dict[str, object] | None = None) -> None:
        super().__init__(spec, section)
        # uuid -> (index, PCI bus id, compute units, total MiB); the plugin sets it from the hardware
        self.devices_info: Callable[[], dict[str, tuple[int, str, int, int]]] = dict

    def admission_problem(self, container: Obj) -> str | None:
        return (
            # the fault lets 0 through, as a webhook without the range check would
            check_quantity(
                container, self.count_resource, low=0 if faults.on(ZERO_FAULT) else 1, high=MAX_DEVICES
            )
            or check_quantity(container, self.memory_resource, mib_per_unit=self.memory_unit_mib)
            or check_quantity(container, self.core_resource, high=100)
        )

    def allocate_response(self, req: AllocateInput) -> ContainerAllocation:
        out = ContainerAllocation()
        out.envs[VISIBLE_ENV] = ",".join(d.uuid for d in req.devices)
        info = self.devices_info()
        out.devices.append(DeviceSpec("/dev/kfd", "/dev/kfd"))
        out.devices.append(DeviceSpec("/dev/mkfd", "/dev/mkfd"))
        unknown = [d.uuid for d in req.devices if info and d.uuid not in info]
        if unknown:  # the driver lists this node's DCUs: another one is not this container's to get
            raise ProtocolError(f"unknown DCU(s) on this node: {', '.join(unknown)}")
        for d in req.devices:
            i = info[d.uuid][0] if d.uuid in info else device_index(d.uuid)
            out.devices.append(DeviceSpec(f"/dev/dri/card{i}", f"/dev/dri/card{i}"))
            out.devices.append(DeviceSpec(f"/dev/dri/renderD{128 + i}", f"/dev/dri/renderD{128 + i}"))
        for container_path, env, default in DRIVER_MOUNTS:
            host = os.environ.get(env, default) if env else default
            out.mounts.append(Mount(container_path, host, True))
        if len(req.devices) == 1:
            d = req.devices[0]
            # not info.get(uuid, default): the default (parsing the ID) must not run for a listed DCU
            known = info.get(d.uuid)
            idx, bus, cus, total = known if known else (device_index(d.uuid), "", COMPUTE_UNITS, 0)
            if d.usedmem < total or d.usedcores < 100:
                out.mounts.append(self._write_vdev(req, d.uuid, idx, bus, cus, d.usedmem, d.usedcores))
        return out

    def _write_vdev(
        self, req: AllocateInput, uuid: str, idx: int, bus: str, cus: int, mem: int, cores: int
    ) -> Mount:
        """A partial device: the vdev config the DCU runtime reads, in a directory named as upstream's."""
        cu_count = max(1, cus * cores // 100) if cores else cus
        m1, m2 = cu_mask(cu_count, cus)
        pipe, vdev = 0, 0
        name = f"{req.pod_uid}_{req.container_name}_{idx}_{pipe}_{vdev}_{m1}_{m2}"
        host_dir = Path(req.hook_path) / "vgpu" / "dcu" / name
        host_dir.mkdir(parents=True, exist_ok=True)
        (host_dir / VDEV_FILE).write_text(
            f"PciBusId: {bus}\ncu_mask: {m1},{m2}\ncu_count: {cu_count}\nmem: {mem} MiB\n"
            f"device_id: {idx}\nvdev_id: {vdev}\npipe_id: {pipe}\nenable: 1\n"
        )
        return Mount(VDEV_MOUNT, str(host_dir), True)
