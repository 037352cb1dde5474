"""Find the declarations of an API key: its request and response messages.

Message modules are imported on first use (see ``messages.MODULES``), so importing the protocol
package costs almost nothing and only the APIs a broker actually serves are ever loaded.
"""

from __future__ import annotations

import importlib
from functools import cache
from types import ModuleType

from .codec import CodecError
from .messages import MODULES
from .schema import Message


@cache
def _module(api_key: int) -> ModuleType:
    name = MODULES.get(api_key)
    if name is None:
        raise CodecError(f"unknown API key {api_key}")
    return importlib.import_module(f"{__package__}.messages.{name}")


def request_message(api_key: int) -> Message:
    """The request declaration of ``api_key``; ``CodecError`` if there is none."""
    message: Message = _module(api_key).REQUEST
    return message


def response_message(api_key: int) -> Message:
    """The response declaration of ``api_key``; ``CodecError`` if there is none."""
    message: Message = _module(api_key).RESPONSE
    return message


def api_name(api_key: int) -> str:
    """``Produce`` for 0, and so on; ``Unknown(N)`` for keys with no declaration."""
    try:
        return request_message(api_key).name.removesuffix("Request")
    except CodecError:
        return f"Unknown({api_key})"
