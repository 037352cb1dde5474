"""WriteTxnMarkers (key 27), version 1.

Behaviour: the inter-broker API a transaction coordinator (or the admin client's
``abortTransaction``, KIP-664) uses to have a partition leader end a producer's transaction:
for each marker, a COMMIT (``transaction_result`` true) or ABORT control batch carrying the
producer id, epoch and coordinator epoch is appended to each listed partition through
``coordinator.transaction.markers.write_txn_markers``, the same path this broker's own
transaction coordinator uses. The producer's open transaction on the partition ends there
(the last stable offset moves on), and an ABORT of data it wrote there is added to the
aborted transaction index (read_committed consumers skip those records).

Errors, per partition as Kafka's ``handleWriteTxnMarkersRequest`` and the leader's producer
state: UNKNOWN_TOPIC_OR_PARTITION (not hosted here), NOT_LEADER_OR_FOLLOWER,
INVALID_PRODUCER_EPOCH (an epoch below the producer's last one on the partition),
TRANSACTION_COORDINATOR_FENCED (a coordinator epoch below that of the producer's last
marker), and the log's append errors. Results are grouped by producer id, as Kafka's
response (two markers of one producer id are merged); a partition listed twice in a marker
gets one marker; a marker with no partitions is not answered. A marker for a
``__consumer_offsets`` partition goes to the group coordinator, which writes it behind its
queued writes and completes (COMMIT) or drops (ABORT) the producer's pending transactional
offsets (Kafka's ``GroupCoordinator.completeTransaction``).

Per version: v0 removed in Kafka 4.0; v1 flexible (the baseline); v2 (KIP-1228,
``transaction_version``) is not advertised by Kafka 4.1, so not served.

Not implemented: ACLs (CLUSTER_ACTION / ALTER on the cluster); transactions version 2 epoch
rules.
"""

from __future__ import annotations

from typing import Any

from pykbroker.api.context import RequestContext
from pykbroker.api.protocol.api_keys import ApiKey
from pykbroker.api.protocol.errors import ErrorCode
from pykbroker.clock import wall_clock_ms
from pykbroker.coordinator.transaction.markers import OFFSETS_TOPIC, write_txn_markers

API_KEY = ApiKey.WRITE_TXN_MARKERS


async def handle(ctx: RequestContext, request: dict[str, Any]) -> dict[str, Any]:
    replica_manager = ctx.broker.service("replica_manager")
    #: producer id -> (topic, partition) -> error, in request order
    results: dict[int, dict[tuple[str, int], ErrorCode]] = {}
    for marker in request["markers"]:
        partitions = [
            (topic["name"], index)
            for topic in marker["topics"]
            for index in topic["partition_indexes"]
        ]
        if not partitions:
            continue
        offsets = any(topic == OFFSETS_TOPIC for topic, _ in partitions)
        errors = await write_txn_markers(
            replica_manager,
            marker["producer_id"],
            marker["producer_epoch"],
            marker["coordinator_epoch"],
            bool(marker["transaction_result"]),
            partitions,
            wall_clock_ms(),
            group_coordinator=ctx.broker.service("group_coordinator") if offsets else None,
        )
        results.setdefault(marker["producer_id"], {}).update(errors)
    markers = []
    for producer_id, errors in results.items():
        by_topic: dict[str, list[dict[str, Any]]] = {}
        for (topic, index), error in errors.items():
            by_topic.setdefault(topic, []).append({"partition_index": index, "error_code": error})
        markers.append(
            {
                "producer_id": producer_id,
                "topics": [{"name": t, "partitions": p} for t, p in by_topic.items()],
            }
        )
    return {"markers": markers}
