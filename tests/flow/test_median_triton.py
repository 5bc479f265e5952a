import re
from pathlib import Path

import pytest

from mateffnet.flow.tvl1 import _median_network

SOURCE = Path(__file__).resolve().parents[2] / "src" / "mateffnet" / "flow" / "median_triton.py"


@pytest.mark.parametrize("count", [9, 25])
def test_unrolled_networks_are_the_generated_ones(count):
    # The Triton kernel spells the min/max networks out; they must be exactly tvl1._median_network's,
    # which test_tvl1 checks against cv2.medianBlur (and the interpreter test runs the kernel).
    text = SOURCE.read_text()
    body = text.split(f"def _median_of_{count}(")[1].split("\n\n")[0]
    steps = re.findall(r"^    (v\d+(?:, v\d+)?) = (.*)$", body, flags=re.MULTILINE)
    network, output = _median_network(count)
    expected = []
    for lo, hi, need_lo, need_hi in network:
        if need_lo and need_hi:
            expected.append((f"v{lo}, v{hi}", f"tl.minimum(v{lo}, v{hi}), tl.maximum(v{lo}, v{hi})"))
        elif need_lo:
            expected.append((f"v{lo}", f"tl.minimum(v{lo}, v{hi})"))
        else:
            expected.append((f"v{hi}", f"tl.maximum(v{lo}, v{hi})"))
    assert steps == expected
    assert body.rstrip().endswith(f"return v{output}")
