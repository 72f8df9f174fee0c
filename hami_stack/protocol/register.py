"""Node register annotations: the device list a device plugin publishes on its Node.

Two encodings exist:

* JSON (NVIDIA since v2.8, Ascend, AMD, Vastai, Biren, Kunlun vXPU): an array of objects with the
  keys ``id, index, count, devmem, devcore, type, numa, mode, migProfiles, health`` written with Go's
  ``omitempty`` (zero values and ``false`` are absent), plus ``migtemplate``, ``devicevendor`` and
  ``custominfo`` accepted on read. Unknown keys are ignored, as Go's decoder does.
* CSV (legacy NVIDIA, Hygon, Iluvatar): ``<device>:`` repeated, each device
  ``id,count,devmem,devcore,type,numa,health`` (7 fields) or ``...,health,index,mode`` (9 fields; what
  :func:`encode_register_csv` writes). Missing index means 0 and missing mode means ``hami-core``.

Decoders validate everything before returning and raise :class:`ProtocolError` naming the device
and field, so a bad annotation is dropped whole. They are stricter than HAMi on two points, both
values no plugin writes: negative numbers and a missing ``id`` are rejected.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from .errors import ProtocolError

MODE_HAMI_CORE = "hami-core"
MODE_MIG = "mig"
MODE_MPS = "mps"
_INT32_MAX = 2**31 - 1


@dataclass(frozen=True)
class DeviceInfo:
    """One physical device as its plugin registered it (memory in MiB, cores in percent of a device)."""

    id: str
    count: int  # sharing slots (deviceSplitCount)
    devmem: int
    devcore: int
    type: str
    numa: int = 0
    health: bool = True
    index: int = 0
    mode: str = MODE_HAMI_CORE
    mig_profiles: tuple[dict[str, Any], ...] = ()
    mig_template: tuple[Any, ...] = ()
    device_vendor: str = ""
    custom_info: dict[str, Any] = field(default_factory=dict)

    def to_json_obj(self) -> dict[str, Any]:
        """The object a Go ``omitempty`` encoder writes (NVIDIA's key set and order)."""
        out: dict[str, Any] = {}
        for key, value in (
            ("id", self.id),
            ("index", self.index),
            ("count", self.count),
            ("devmem", self.devmem),
            ("devcore", self.devcore),
            ("type", self.type),
            ("numa", self.numa),
            ("mode", self.mode),
            ("migProfiles", list(self.mig_profiles)),
            ("health", self.health),
            ("migtemplate", list(self.mig_template)),
            ("devicevendor", self.device_vendor),
            ("custominfo", self.custom_info),
        ):
            if value:
                out[key] = value
        return out


def encode_register_json(devices: Iterable[DeviceInfo]) -> str:
    return json.dumps([d.to_json_obj() for d in devices], separators=(",", ":"))


def _int_field(where: str, name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ProtocolError(f"{where}: field {name!r} must be an integer, got {value!r}")
    if value < 0 or value > _INT32_MAX:
        raise ProtocolError(f"{where}: field {name!r} must be between 0 and {_INT32_MAX}, got {value}")
    return value


def _str_field(where: str, name: str, value: Any) -> str:
    if not isinstance(value, str):
        raise ProtocolError(f"{where}: field {name!r} must be a string, got {value!r}")
    return value


def _json_device(i: int, obj: Any) -> DeviceInfo:
    where = f"device {i}"
    if not isinstance(obj, dict):
        raise ProtocolError(f"{where}: must be an object, got {type(obj).__name__}")
    dev_id = _str_field(where, "id", obj.get("id", ""))
    if not dev_id:
        raise ProtocolError(f"{where}: field 'id' is missing or empty")
    where = f"device {i} ({dev_id})"
    health = obj.get("health", False)
    if not isinstance(health, bool):
        raise ProtocolError(f"{where}: field 'health' must be a boolean, got {health!r}")
    profiles = obj.get("migProfiles")
    profiles = [] if profiles is None else profiles
    if not isinstance(profiles, list) or not all(isinstance(p, dict) for p in profiles):
        raise ProtocolError(f"{where}: field 'migProfiles' must be an array of objects")
    template = obj.get("migtemplate")
    template = [] if template is None else template
    if not isinstance(template, list):
        raise ProtocolError(f"{where}: field 'migtemplate' must be an array")
    custom = obj.get("custominfo")
    custom = {} if custom is None else custom
    if not isinstance(custom, dict):
        raise ProtocolError(f"{where}: field 'custominfo' must be an object")
    return DeviceInfo(
        id=dev_id,
        index=_int_field(where, "index", obj.get("index", 0)),
        count=_int_field(where, "count", obj.get("count", 0)),
        devmem=_int_field(where, "devmem", obj.get("devmem", 0)),
        devcore=_int_field(where, "devcore", obj.get("devcore", 0)),
        type=_str_field(where, "type", obj.get("type", "")),
        numa=_int_field(where, "numa", obj.get("numa", 0)),
        mode=_str_field(where, "mode", obj.get("mode", "")),
        health=health,
        mig_profiles=tuple(profiles),
        mig_template=tuple(template),
        device_vendor=_str_field(where, "devicevendor", obj.get("devicevendor", "")),
        custom_info=custom,
    )


def decode_register_json(value: str) -> list[DeviceInfo]:
    try:
        data = json.loads(value)
    except ValueError as e:
        raise ProtocolError(f"register annotation is not valid JSON: {e}") from e
    if not isinstance(data, list):
        raise ProtocolError(f"register annotation must be a JSON array, got {type(data).__name__}")
    return [_json_device(i, obj) for i, obj in enumerate(data)]


def encode_register_csv(devices: Iterable[DeviceInfo]) -> str:
    parts = []
    for d in devices:
        for name, text in (("id", d.id), ("type", d.type), ("mode", d.mode)):
            if "," in text or ":" in text:
                raise ProtocolError(
                    f"device {d.id}: field {name!r} cannot hold ',' or ':' in the CSV encoding"
                )
        health = "true" if d.health else "false"
        parts.append(
            f"{d.id},{d.count},{d.devmem},{d.devcore},{d.type},{d.numa},{health},{d.index},{d.mode}:"
        )
    return "".join(parts)


_TRUE = frozenset({"1", "t", "T", "TRUE", "true", "True"})
_FALSE = frozenset({"0", "f", "F", "FALSE", "false", "False"})


def _csv_int(where: str, name: str, text: str) -> int:
    try:
        value = int(text, 10)
    except ValueError:
        raise ProtocolError(f"{where}: field {name!r} must be an integer, got {text!r}") from None
    if value < 0 or value > _INT32_MAX:
        raise ProtocolError(f"{where}: field {name!r} must be between 0 and {_INT32_MAX}, got {value}")
    return value


def decode_register_csv(value: str) -> list[DeviceInfo]:
    if ":" not in value:
        raise ProtocolError("register annotation has no ':'-terminated device entry")
    devices = []
    for i, segment in enumerate(value.split(":")):
        if not segment:
            continue
        fields = segment.split(",")
        where = f"device {i} ({fields[0]})"
        if len(fields) not in (7, 9):
            raise ProtocolError(f"{where}: expected 7 or 9 comma-separated fields, got {len(fields)}")
        health_text = fields[6]
        if health_text not in _TRUE and health_text not in _FALSE:
            raise ProtocolError(f"{where}: field 'health' must be a boolean, got {health_text!r}")
        if not fields[0]:
            raise ProtocolError(f"device {i}: field 'id' is empty")
        devices.append(
            DeviceInfo(
                id=fields[0],
                count=_csv_int(where, "count", fields[1]),
                devmem=_csv_int(where, "devmem", fields[2]),
                devcore=_csv_int(where, "devcore", fields[3]),
                type=fields[4],
                numa=_csv_int(where, "numa", fields[5]),
                health=health_text in _TRUE,
                index=_csv_int(where, "index", fields[7]) if len(fields) == 9 else 0,
                mode=fields[8] if len(fields) == 9 else MODE_HAMI_CORE,
            )
        )
    return devices


def decode_register(value: str) -> list[DeviceInfo]:
    """Either encoding: a value starting with ``[`` is JSON, anything else the legacy CSV."""
    if value.lstrip().startswith("["):
        return decode_register_json(value)
    return decode_register_csv(value)


# --- hami.io/node-nvidia-score --------------------------------------------------------------------


def encode_topology_scores(scores: dict[str, dict[str, int]]) -> str:
    return json.dumps([{"uuid": u, "score": s} for u, s in scores.items()], separators=(",", ":"))


def decode_topology_scores(value: str) -> dict[str, dict[str, int]]:
    """``[{"uuid": "GPU-a", "score": {"GPU-b": 60}}, ...]`` -> ``{"GPU-a": {"GPU-b": 60}}``."""
    try:
        data = json.loads(value)
    except ValueError as e:
        raise ProtocolError(f"topology score annotation is not valid JSON: {e}") from e
    if not isinstance(data, list):
        raise ProtocolError("topology score annotation must be a JSON array")
    out: dict[str, dict[str, int]] = {}
    for i, item in enumerate(data):
        if not isinstance(item, dict) or not isinstance(item.get("uuid"), str) or not item["uuid"]:
            raise ProtocolError(f"topology score entry {i}: needs a non-empty string 'uuid'")
        score = item.get("score") or {}
        if not isinstance(score, dict) or not all(
            isinstance(k, str) and isinstance(v, int) and not isinstance(v, bool) for k, v in score.items()
        ):
            raise ProtocolError(
                f"topology score entry {i} ({item['uuid']}): 'score' must map UUIDs to integers"
            )
        out[item["uuid"]] = dict(score)
    return out
