"""Card indexes read back from capacity-derived device IDs (``<node><infix><i>``): a malformed ID is
refused, never read as card 0 (that would hand a container a card nobody assigned it)."""

from __future__ import annotations

import pytest

from hami_stack.devices import awsneuron, cambricon, enflame, enflame_drs, kunlun, metax, mthreads
from hami_stack.protocol.errors import ProtocolError

READERS = {
    "enflame": (enflame.card_index, "n1-GCU-3"),
    "enflame_drs": (enflame_drs.card_index, "n1-enflame-drs-3"),
    "kunlun": (kunlun.card_index, "n1-kunlun-3"),
    "awsneuron": (awsneuron.device_index, "n1-AWSNeuron-3"),
    "cambricon": (cambricon.card_index, f"n1{cambricon.ID_INFIX}3"),
    "mthreads": (mthreads.gpu_index, f"n1{mthreads.ID_INFIX}3"),
    "metax": (metax.card_index, f"n1{metax.ID_INFIX}3"),
}


@pytest.mark.parametrize("family", sorted(READERS))
def test_the_index_is_read_and_a_malformed_id_is_refused(family: str) -> None:
    read, good = READERS[family]
    assert read(good) == 3
    infix = good[len("n1"):-1]
    for bad in ("n1", f"n1{infix}", f"n1{infix}x", f"n1{infix}-1", "GPU-0", ""):
        with pytest.raises(ProtocolError, match="is not <node>"):
            read(bad)
