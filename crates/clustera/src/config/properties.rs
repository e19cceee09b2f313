//! Which librdkafka properties belong to the consumer, the producer, or both.

pub(crate) fn is_producer_only(property: &str) -> bool {
    matches!(
        property,
        "acks"
            | "linger.ms"
            | "batch.size"
            | "batch.num.messages"
            | "compression.type"
            | "compression.codec"
            | "enable.idempotence"
            | "message.timeout.ms"
            | "delivery.timeout.ms"
            | "queue.buffering.max.messages"
            | "queue.buffering.max.kbytes"
            | "queue.buffering.max.ms"
            | "request.required.acks"
            | "retries"
            | "message.send.max.retries"
            | "transactional.id"
            | "partitioner"
    )
}

pub(crate) fn is_consumer_only(property: &str) -> bool {
    matches!(
        property,
        "auto.offset.reset"
            | "session.timeout.ms"
            | "max.poll.interval.ms"
            | "heartbeat.interval.ms"
            | "fetch.wait.max.ms"
            | "fetch.min.bytes"
            | "fetch.max.bytes"
            | "max.partition.fetch.bytes"
            | "fetch.message.max.bytes"
            | "queued.min.messages"
            | "queued.max.messages.kbytes"
            | "partition.assignment.strategy"
            | "group.instance.id"
            | "isolation.level"
            | "enable.partition.eof"
            | "check.crcs"
            | "group.protocol"
    )
}
