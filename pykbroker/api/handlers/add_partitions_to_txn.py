"""AddPartitionsToTxn (key 24), versions 0-5.

Behaviour: adds partitions to the producer's ongoing transaction at the transaction
coordinator (Empty/Complete* -> Ongoing), persisted in ``__transaction_state`` before the
answer. Every partition gets the same error; a partition of an unknown topic gets
UNKNOWN_TOPIC_OR_PARTITION and the others OPERATION_NOT_ATTEMPTED, as Kafka. Errors:
INVALID_PRODUCER_ID_MAPPING, PRODUCER_FENCED, CONCURRENT_TRANSACTIONS (the previous
transaction is still completing), INVALID_TXN_STATE.

Per version: v0-3 one transaction (``v3_and_below_*``); v3 flexible; v4+ (KIP-890, the
broker-to-broker form) a batch of transactions answered per transaction, with
``verify_only`` checking that the partitions are already in the ongoing transaction.

Brokers send the v4 ``verify_only`` form to the transaction coordinator's broker to verify
a TxnOffsetCommit whose group coordinator is another broker. NOT_COORDINATOR when this broker
does not lead the transactional id's ``__transaction_state`` partition.

Not implemented: ACLs (TRANSACTIONAL_ID_AUTHORIZATION_FAILED), KIP-890 verification of
produce requests by partition leaders (transactional produce is accepted by any leader, as
with ``transaction.partition.verification.enable=false``).
"""

from __future__ import annotations

from typing import Any

from pykbroker.api.context import RequestContext
from pykbroker.api.protocol.api_keys import ApiKey
from pykbroker.api.protocol.errors import ErrorCode

API_KEY = ApiKey.ADD_PARTITIONS_TO_TXN


def _results(
    topics: list[dict[str, Any]], error: ErrorCode, unknown: set[tuple[str, int]]
) -> list[dict[str, Any]]:
    return [
        {
            "name": topic["name"],
            "results_by_partition": [
                {
                    "partition_index": p,
                    "partition_error_code": (
                        ErrorCode.UNKNOWN_TOPIC_OR_PARTITION
                        if (topic["name"], p) in unknown
                        else error
                    ),
                }
                for p in topic["partitions"]
            ],
        }
        for topic in topics
    ]


async def _add(
    ctx: RequestContext,
    transactional_id: str,
    producer_id: int,
    producer_epoch: int,
    topics: list[dict[str, Any]],
    verify_only: bool,
) -> list[dict[str, Any]]:
    image = ctx.broker.service("controller").image
    wanted = {(t["name"], p) for t in topics for p in t["partitions"]}
    unknown = set()
    for name, p in wanted:
        topic = image.topics.get(name)
        if topic is None or p not in topic.partitions:
            unknown.add((name, p))
    if unknown:
        return _results(topics, ErrorCode.OPERATION_NOT_ATTEMPTED, unknown)
    coordinator = ctx.broker.service("transaction_coordinator")
    error = await coordinator.add_partitions(
        transactional_id, producer_id, producer_epoch, frozenset(wanted), verify_only=verify_only
    )
    return _results(topics, error, set())


async def handle(ctx: RequestContext, request: dict[str, Any]) -> dict[str, Any]:
    if ctx.api_version < 4:
        results = await _add(
            ctx,
            request["v3_and_below_transactional_id"],
            request["v3_and_below_producer_id"],
            request["v3_and_below_producer_epoch"],
            request["v3_and_below_topics"],
            False,
        )
        return {"throttle_time_ms": 0, "results_by_topic_v3_and_below": results}
    by_transaction = []
    for txn in request["transactions"]:
        results = await _add(
            ctx,
            txn["transactional_id"],
            txn["producer_id"],
            txn["producer_epoch"],
            txn["topics"],
            txn["verify_only"],
        )
        by_transaction.append(
            {"transactional_id": txn["transactional_id"], "topic_results": results}
        )
    return {
        "throttle_time_ms": 0,
        "error_code": ErrorCode.NO_ERROR,
        "results_by_transaction": by_transaction,
    }
