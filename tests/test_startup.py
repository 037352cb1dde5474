"""Start-up cost: importing the broker builds no message codec (they are built on first use).

Checked in a fresh interpreter, so codecs other tests built in this process do not count.
"""

from __future__ import annotations

import json
import subprocess
import sys

_PROBE = """
import json
from pykbroker.api.protocol import codec

built = []
_build_struct = codec.build_struct


def counting_build_struct(*args, **kwargs):
    built.append(args[1])
    return _build_struct(*args, **kwargs)


codec.build_struct = counting_build_struct
import pykbroker.server.broker  # noqa: E402,F401

after_import = (len(codec._CACHE), len(built))
from pykbroker.api.protocol.api_keys import ApiKey  # noqa: E402
from pykbroker.api.protocol.registry import request_message  # noqa: E402

codec.encode(request_message(ApiKey.METADATA), 12, {"topics": None})
after_use = (len(codec._CACHE), len(built))
print(json.dumps({"after_import": after_import, "after_use": after_use}))
"""


def test_importing_the_broker_builds_no_codec() -> None:
    result = subprocess.run(
        [sys.executable, "-c", _PROBE],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    found = json.loads(result.stdout.strip().splitlines()[-1])
    assert found["after_import"] == [0, 0]
    # the probe sees codecs being built: the first encode caches one (nested structs built too)
    cached, built = found["after_use"]
    assert cached == 1
    assert built >= 1
