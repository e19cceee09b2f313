//! Subject naming strategies: which registry subject a record's schema is registered and
//! looked up under. The names and rules are Confluent's, so a topic shared with Java or
//! Python producers uses the same subjects.

use std::fmt;
use std::str::FromStr;

use crate::SchemaError;

/// How a subject name is derived from the topic and the record's type.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SubjectNameStrategy {
    /// `<topic>-value` (or `-key`): one schema lineage per topic. The default everywhere.
    #[default]
    Topic,
    /// `<record full name>`: one lineage per type, shared by every topic carrying it.
    Record,
    /// `<topic>-<record full name>`: one lineage per type and topic, for topics that carry
    /// several event types.
    TopicRecord,
}

impl SubjectNameStrategy {
    /// The subject for a value (`is_key == false`) or a key written to `topic`. `record_name`
    /// is the Avro record's full name (`namespace.Name`) or a JSON Schema's `title`; the
    /// record strategies need it.
    pub fn subject(
        self,
        topic: &str,
        record_name: Option<&str>,
        is_key: bool,
    ) -> Result<String, SchemaError> {
        let record = || {
            record_name.filter(|n| !n.is_empty()).ok_or_else(|| {
                SchemaError::Schema(format!(
                    "the {self} subject name strategy needs a named schema \
                     (an Avro record, or a JSON Schema with a \"title\")"
                ))
            })
        };
        Ok(match self {
            Self::Topic => format!("{topic}-{}", if is_key { "key" } else { "value" }),
            Self::Record => record()?.to_owned(),
            Self::TopicRecord => format!("{topic}-{}", record()?),
        })
    }
}

impl fmt::Display for SubjectNameStrategy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Topic => "topic",
            Self::Record => "record",
            Self::TopicRecord => "topic-record",
        })
    }
}

/// Accepts the short names (`topic`, `record`, `topic-record`) and Confluent's class names
/// (`TopicNameStrategy`, `io.confluent.kafka.serializers.subject.RecordNameStrategy`, ...).
impl FromStr for SubjectNameStrategy {
    type Err = SchemaError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let short = s
            .rsplit('.')
            .next()
            .unwrap_or(s)
            .trim()
            .to_ascii_lowercase();
        match short.as_str() {
            "topic" | "topicnamestrategy" => Ok(Self::Topic),
            "record" | "recordnamestrategy" => Ok(Self::Record),
            "topic-record" | "topic_record" | "topicrecordnamestrategy" => Ok(Self::TopicRecord),
            _ => Err(SchemaError::Schema(format!(
                "unknown subject name strategy {s:?} (expected topic, record or topic-record)"
            ))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_confluent() {
        let t = SubjectNameStrategy::Topic;
        assert_eq!(t.subject("orders", None, false).unwrap(), "orders-value");
        assert_eq!(t.subject("orders", None, true).unwrap(), "orders-key");
        let r = SubjectNameStrategy::Record;
        assert_eq!(
            r.subject("orders", Some("shop.OrderEvent"), false).unwrap(),
            "shop.OrderEvent"
        );
        let tr = SubjectNameStrategy::TopicRecord;
        assert_eq!(
            tr.subject("orders", Some("shop.OrderEvent"), false)
                .unwrap(),
            "orders-shop.OrderEvent"
        );
        let err = r.subject("orders", None, false).unwrap_err().to_string();
        assert!(
            err.contains("record subject name strategy needs a named schema"),
            "{err}"
        );
    }

    #[test]
    fn parses_short_and_class_names() {
        for (s, want) in [
            ("topic", SubjectNameStrategy::Topic),
            ("RecordNameStrategy", SubjectNameStrategy::Record),
            (
                "io.confluent.kafka.serializers.subject.TopicRecordNameStrategy",
                SubjectNameStrategy::TopicRecord,
            ),
            ("topic-record", SubjectNameStrategy::TopicRecord),
        ] {
            assert_eq!(s.parse::<SubjectNameStrategy>().unwrap(), want, "{s}");
        }
        assert!("subject".parse::<SubjectNameStrategy>().is_err());
    }
}
