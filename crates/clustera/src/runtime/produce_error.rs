//! Which produce errors go away by themselves and which never will. Pure: no I/O.
//!
//! librdkafka already retries retriable errors internally (with the idempotent producer, until
//! `message.timeout.ms`), so a delivery report that fails is either a timeout or purge (worth
//! sending again), a refusal that no retry can change (the record must leave the walk, or its
//! partition freezes), or a fatal producer error. `RDKafkaError::is_retriable` exists only for
//! error objects, not for the codes of delivery reports, hence this table. It follows the Java
//! client's exception hierarchy, with one difference: librdkafka retries
//! `UnknownTopicOrPartition` internally (metadata can lag behind a new topic) and reports it in
//! a delivery report only once `topic.metadata.propagation.max.ms` has passed without the topic
//! appearing, so there it is final, like librdkafka's own `UnknownTopic`.

use rdkafka::error::RDKafkaErrorCode;

/// What to do about a failed produce.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ProduceErrorClass {
    /// Send the record again.
    Transient,
    /// No retry will help: dead-letter the input (or stop, for a dead letter).
    Permanent,
    /// The producer cannot be used any more.
    Fatal,
}

/// Classifies the error code of a failed produce or delivery report.
pub(crate) fn classify(code: RDKafkaErrorCode) -> ProduceErrorClass {
    use RDKafkaErrorCode as C;
    match code {
        C::Fatal | C::ProducerFenced | C::Fenced | C::TransactionalIdAuthorizationFailed => {
            ProduceErrorClass::Fatal
        }
        C::MessageSizeTooLarge
        | C::MessageBatchTooLarge
        | C::InvalidMessageSize
        | C::InvalidRecord
        | C::InvalidTimestamp
        | C::InvalidTopic
        | C::InvalidRequiredAcks
        | C::TopicAuthorizationFailed
        | C::ClusterAuthorizationFailed
        | C::UnsupportedForMessageFormat
        | C::UnsupportedVersion
        | C::PolicyViolation
        | C::UnknownTopic
        | C::UnknownTopicOrPartition
        | C::UnknownPartition
        | C::InvalidArgument
        | C::BadMessage => ProduceErrorClass::Permanent,
        _ => ProduceErrorClass::Transient,
    }
}

/// How often a record may fail with a transient error that is not an outage (a code the table
/// does not know, a broker that keeps answering with an error) before it counts as refused for
/// good. Outages (timeouts, purges, lost connections) never count: waiting them out is right.
pub(crate) const MAX_UNEXPLAINED_FAILURES: u32 = 10;

/// Whether the failure says only that the broker could not be reached in time.
pub(crate) fn is_outage(code: RDKafkaErrorCode) -> bool {
    use RDKafkaErrorCode as C;
    matches!(
        code,
        C::MessageTimedOut
            | C::PurgeQueue
            | C::PurgeInflight
            | C::AllBrokersDown
            | C::BrokerTransportFailure
            | C::RequestTimedOut
            | C::NetworkException
            | C::OperationTimedOut
            | C::TimedOutQueue
            | C::NotLeaderForPartition
            | C::LeaderNotAvailable
            | C::NotEnoughReplicas
            | C::NotEnoughReplicasAfterAppend
            | C::QueueFull
    )
}

/// Whether a permanent refusal is about the record's size, which a smaller record can cure.
pub(crate) fn is_size_refusal(code: RDKafkaErrorCode) -> bool {
    matches!(
        code,
        RDKafkaErrorCode::MessageSizeTooLarge
            | RDKafkaErrorCode::MessageBatchTooLarge
            | RDKafkaErrorCode::InvalidMessageSize
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use RDKafkaErrorCode as C;

    #[test]
    fn refusals_that_never_change_are_permanent() {
        for code in [
            C::MessageSizeTooLarge,
            C::UnknownTopic,
            C::UnknownTopicOrPartition,
            C::UnknownPartition,
            C::TopicAuthorizationFailed,
            C::InvalidRecord,
            C::PolicyViolation,
        ] {
            assert_eq!(classify(code), ProduceErrorClass::Permanent, "{code:?}");
        }
    }

    #[test]
    fn outages_and_leadership_changes_are_transient() {
        for code in [
            C::MessageTimedOut,
            C::NotLeaderForPartition,
            C::InvalidDifferentRecord,
            C::NotEnoughReplicas,
            C::RequestTimedOut,
            C::AllBrokersDown,
            C::PurgeQueue,
            C::PurgeInflight,
            C::QueueFull,
        ] {
            assert_eq!(classify(code), ProduceErrorClass::Transient, "{code:?}");
        }
    }

    #[test]
    fn only_outages_are_waited_out_for_ever() {
        assert!(is_outage(C::MessageTimedOut));
        assert!(is_outage(C::PurgeQueue));
        assert!(!is_outage(C::Unknown));
        assert!(!is_outage(C::InvalidMessage));
        assert_eq!(classify(C::Unknown), ProduceErrorClass::Transient);
    }

    #[test]
    fn a_fatal_producer_is_fatal() {
        assert_eq!(classify(C::Fatal), ProduceErrorClass::Fatal);
        assert_eq!(classify(C::ProducerFenced), ProduceErrorClass::Fatal);
    }

    #[test]
    fn only_size_refusals_can_be_cured_by_shrinking() {
        assert!(is_size_refusal(C::MessageSizeTooLarge));
        assert!(!is_size_refusal(C::TopicAuthorizationFailed));
    }
}
