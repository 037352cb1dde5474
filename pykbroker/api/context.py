"""What a request handler receives: the request's header and the broker's services.

Handlers are ``async def handle(ctx: RequestContext, request: dict) -> dict | None`` (None
means "send no response", as for Produce with acks=0). ``BrokerServices`` is the narrow view
of the broker a handler may use; ``server/broker.py`` provides it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from .protocol.header import RequestHeader

if TYPE_CHECKING:
    from pykbroker.config import BrokerConfig


@dataclass(frozen=True, slots=True)
class Endpoint:
    """A broker as clients should reach it (an advertised listener)."""

    node_id: int
    host: str
    port: int
    rack: str | None = None


class BrokerServices(Protocol):
    """The broker as handlers see it."""

    config: BrokerConfig
    cluster_id: str

    def endpoint(self) -> Endpoint:
        """This broker's advertised endpoint."""
        ...

    def service(self, name: str) -> Any:
        """A named component: "controller", "replica_manager", "group_coordinator", ..."""
        ...


@dataclass(slots=True)
class RequestContext:
    """One request in flight."""

    header: RequestHeader
    broker: BrokerServices
    client_host: str
    connection_id: str

    @property
    def api_version(self) -> int:
        return self.header.request_api_version
