"""ApiVersions (key 18), versions 0-4.

Behaviour: lists, for every API this broker has a handler for, exactly Apache Kafka 4.1's
(min, max) versions (``dispatch.SUPPORTED``), with Kafka's quirk of listing Produce from v0.
A request at a version above 4 never reaches this handler: the dispatcher answers it at v0
with UNSUPPORTED_VERSION and the same list, so the client can downgrade (KIP-511).

Per version: v1 adds throttle_time_ms; v3 (KIP-511) is flexible and carries the client's
software name and version, which must match Kafka's pattern or INVALID_REQUEST is returned;
v3+ also reports the supported and finalized features (metadata.version).
"""

from __future__ import annotations

import re
from typing import Any

from pykbroker.api.context import RequestContext
from pykbroker.api.protocol.api_keys import ApiKey
from pykbroker.api.protocol.errors import ErrorCode

API_KEY = ApiKey.API_VERSIONS

_SOFTWARE = re.compile(r"^[a-zA-Z0-9](?:[a-zA-Z0-9\-.]*[a-zA-Z0-9])?$")
METADATA_VERSION = 27  # 4.1-IV0


async def handle(ctx: RequestContext, request: dict[str, Any]) -> dict[str, Any]:
    from pykbroker.api.dispatch import advertised_api_keys

    response: dict[str, Any] = {"error_code": ErrorCode.NO_ERROR, "api_keys": advertised_api_keys()}
    if ctx.api_version >= 3:
        name = request["client_software_name"]
        version = request["client_software_version"]
        if not (_SOFTWARE.match(name) and _SOFTWARE.match(version)):
            response["error_code"] = ErrorCode.INVALID_REQUEST
            return response
        response["supported_features"] = [
            {"name": "metadata.version", "min_version": 7, "max_version": METADATA_VERSION}
        ]
        response["finalized_features_epoch"] = 0
        response["finalized_features"] = [
            {
                "name": "metadata.version",
                "max_version_level": METADATA_VERSION,
                "min_version_level": METADATA_VERSION,
            }
        ]
    return response
