//! Exit codes of the broker commands (`produce`, `consume`, `lag`, `topics`), so that scripts
//! can tell a mistake in the configuration from a broker that is down:
//!
//! | Code | Meaning |
//! |---|---|
//! | 0 | success (also: Ctrl-C, and a reader that closed the pipe) |
//! | 1 | anything else: unknown topic or group, bad input data, a refused record |
//! | 2 | usage: an unknown flag, a missing or malformed argument (clap) |
//! | 69 | the brokers cannot be reached, or a broker call timed out (sysexits' `EX_UNAVAILABLE`) |
//! | 78 | configuration: a bad `KAFKA_*` variable or `-X` property (as kernels, `EX_CONFIG`) |

use rdkafka::error::{KafkaError, RDKafkaErrorCode};

/// sysexits' `EX_UNAVAILABLE`: the brokers cannot be reached or did not answer in time.
pub const EXIT_UNAVAILABLE: u8 = 69;

/// A failure to reach the brokers or a broker call that timed out: exit code 69.
#[derive(Debug)]
pub struct Unavailable(pub String);

impl std::fmt::Display for Unavailable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Unavailable {}

/// The exit code for `error`, from the first cause in its chain that says what kind it is.
pub fn code(error: &anyhow::Error) -> u8 {
    for cause in error.chain() {
        if cause.is::<clustera::ConfigError>() {
            return clustera::EXIT_CONFIG;
        }
        if cause.is::<Unavailable>() {
            return EXIT_UNAVAILABLE;
        }
        if let Some(e) = cause.downcast_ref::<KafkaError>() {
            if matches!(
                e,
                KafkaError::ClientConfig(..) | KafkaError::ClientCreation(_)
            ) {
                return clustera::EXIT_CONFIG;
            }
            if e.rdkafka_error_code().is_some_and(unreachable) {
                return EXIT_UNAVAILABLE;
            }
        }
    }
    1
}

/// librdkafka's codes for "no broker answered": the connection failed or the call timed out.
pub fn unreachable(code: RDKafkaErrorCode) -> bool {
    matches!(
        code,
        RDKafkaErrorCode::OperationTimedOut
            | RDKafkaErrorCode::MessageTimedOut
            | RDKafkaErrorCode::RequestTimedOut
            | RDKafkaErrorCode::BrokerTransportFailure
            | RDKafkaErrorCode::AllBrokersDown
            | RDKafkaErrorCode::Resolve
            | RDKafkaErrorCode::NetworkException
            | RDKafkaErrorCode::BrokerNotAvailable
    )
}

/// Writes `text` to standard output; a reader that closed the pipe (`| head -1`) is no
/// failure, so the command ends quietly with exit code 0 instead of a panic or an error.
pub fn print(text: &str) -> anyhow::Result<()> {
    use std::io::Write as _;
    let mut out = std::io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => {
            Err(anyhow::Error::new(e).context("writing to standard output"))
        }
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_follow_the_first_cause_that_has_a_kind() {
        let config = anyhow::Error::new(clustera::ConfigError::invalid("-X acks", "bad"));
        assert_eq!(code(&config), 78);
        let down = anyhow::Error::new(Unavailable("down".into())).context("producing");
        assert_eq!(code(&down), 69);
        let timeout = anyhow::Error::new(KafkaError::MetadataFetch(
            RDKafkaErrorCode::OperationTimedOut,
        ))
        .context("reading metadata");
        assert_eq!(code(&timeout), 69);
        let unknown = anyhow::Error::new(KafkaError::MetadataFetch(
            RDKafkaErrorCode::UnknownTopicOrPartition,
        ));
        assert_eq!(code(&unknown), 1);
        assert_eq!(code(&anyhow::anyhow!("unknown topic t")), 1);
    }
}
