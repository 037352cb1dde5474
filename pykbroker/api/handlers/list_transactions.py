"""ListTransactions (key 66), versions 0-2.

Behaviour: the transactional ids this broker coordinates (all of them: one node), with
producer id and state name, as Kafka's ``listTransactionStates``. Filters combine (AND):
``state_filters`` (Kafka's state names, case-sensitive; empty = any state; names Kafka does
not know are answered in ``unknown_state_filters`` and match nothing),
``producer_id_filters`` (empty = any), ``duration_filter`` (v1+, >= 0: only transactions
started more than that many ms ago; ids with no transaction started count as started at -1,
as in Kafka) and ``transactional_id_pattern`` (v2+, KIP-1152: a regular expression that must
match the whole id; null or empty = any). Expired ids (Dead) are never listed. The list is
sorted by transactional id.

Errors: COORDINATOR_LOAD_IN_PROGRESS while ``__transaction_state`` is being loaded,
INVALID_REGULAR_EXPRESSION for a pattern that does not compile.

Per version: v1 duration filter (KIP-994), v2 transactional id pattern (KIP-1152); the
response is the same for every version.

Not implemented: ACLs (ids the caller may not describe are not filtered out). Patterns use
Python's ``re``, not Java's regex engine: exotic syntax may differ.
"""

from __future__ import annotations

from typing import Any

from pykbroker.api.context import RequestContext
from pykbroker.api.protocol.api_keys import ApiKey

API_KEY = ApiKey.LIST_TRANSACTIONS


async def handle(ctx: RequestContext, request: dict[str, Any]) -> dict[str, Any]:
    coordinator = ctx.broker.service("transaction_coordinator")
    version = ctx.api_version
    response: dict[str, Any] = coordinator.list_transactions(
        request["state_filters"],
        request["producer_id_filters"],
        request["duration_filter"] if version >= 1 else -1,
        request["transactional_id_pattern"] if version >= 2 else None,
    )
    return response
