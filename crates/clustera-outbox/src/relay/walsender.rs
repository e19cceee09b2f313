//! The I/O side of a walsender session: one connection in replication mode
//! (`replication=database`), `START_REPLICATION`, then the CopyBoth stream.
//!
//! `tokio-postgres` has no replication mode, so this driver is hand-written (the crate docs
//! of `clustera-pgoutput` say why no replication client was taken); it stays thin: the
//! startup, authentication (cleartext, MD5, SCRAM-SHA-256) and message framing come from
//! `postgres-protocol`, the replication messages from `clustera_pgoutput::replication`.
//! Connection settings come from `DATABASE_URL`, parsed by [`crate::pg::Target`] (which
//! also gives the TLS settings: see [`crate::pg`]).
//!
//! The session is opened with `DateStyle=ISO`, `TimeZone=UTC`, `IntervalStyle=postgres` and
//! `bytea_output=hex`, whatever the database or role says, because pgoutput writes column
//! values as text in the session's settings.

use bytes::{Buf, Bytes, BytesMut};
use fallible_iterator::FallibleIterator;
use postgres_protocol::authentication::sasl::{self, ChannelBinding, ScramSha256};
use postgres_protocol::message::{backend, frontend};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::pg::Target;

/// Anything the session can run over: TCP, a Unix socket, or TLS over TCP.
pub(crate) trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

/// Why the session failed.
#[derive(Debug, thiserror::Error)]
pub enum WalsenderError {
    /// The connection failed or broke.
    #[error("replication connection: {0}")]
    Io(#[from] std::io::Error),
    /// The server closed the connection.
    #[error("postgres closed the replication connection")]
    Closed,
    /// The server answered with an error.
    #[error("{severity} {code}: {message}{}", detail.as_deref().map(|d| format!(" ({d})")).unwrap_or_default())]
    Server {
        /// `ERROR`, `FATAL`, ...
        severity: String,
        /// The SQLSTATE.
        code: String,
        /// The primary message.
        message: String,
        /// The detail, if any.
        detail: Option<String>,
    },
    /// The server said something this client does not expect.
    #[error("replication protocol: {0}")]
    Protocol(String),
    /// The connection settings cannot be used.
    #[error("DATABASE_URL: {0}")]
    Config(String),
    /// TLS could not be set up (the server's certificate refused, TLS required and not
    /// offered).
    #[error("TLS to postgres: {0}")]
    Tls(String),
}

impl WalsenderError {
    /// The SQLSTATE of a server error.
    pub fn code(&self) -> Option<&str> {
        match self {
            Self::Server { code, .. } => Some(code),
            _ => None,
        }
    }

    /// Whether the server cannot be reached right now (restarting, connection lost), by
    /// the same rule as [`crate::pg::is_unavailable`].
    pub fn is_unavailable(&self) -> bool {
        match self {
            Self::Io(_) | Self::Closed => true,
            Self::Server { code, .. } => {
                crate::pg::sqlstate_kind(code) == clustera::ErrorKind::Unavailable
            }
            Self::Protocol(_) | Self::Config(_) | Self::Tls(_) => false,
        }
    }
}

impl From<backend::ErrorResponseBody> for WalsenderError {
    fn from(body: backend::ErrorResponseBody) -> Self {
        let (mut severity, mut code, mut message, mut detail) =
            (String::new(), String::new(), String::new(), None);
        let mut fields = body.fields();
        while let Ok(Some(field)) = fields.next() {
            let value = String::from_utf8_lossy(field.value_bytes()).into_owned();
            match field.type_() {
                b'V' => severity = value,
                b'S' if severity.is_empty() => severity = value,
                b'C' => code = value,
                b'M' => message = value,
                b'D' => detail = Some(value),
                _ => {}
            }
        }
        Self::Server {
            severity,
            code,
            message,
            detail,
        }
    }
}

/// What the server sent.
enum Incoming {
    Message(backend::Message),
    /// `CopyBothResponse`, which `postgres-protocol` does not decode: the stream starts.
    CopyBoth,
}

/// An open walsender session.
pub(crate) struct Walsender {
    io: Box<dyn Io>,
    input: BytesMut,
    output: BytesMut,
}

const READ_CHUNK: usize = 128 * 1024;

impl Walsender {
    /// Connects, authenticates and waits until the session is ready for a command.
    pub async fn connect(target: &Target) -> Result<Self, WalsenderError> {
        let io = target.open_stream().await?;
        let mut session = Self {
            io,
            input: BytesMut::with_capacity(READ_CHUNK),
            output: BytesMut::new(),
        };
        session.startup(target).await?;
        Ok(session)
    }

    async fn startup(&mut self, target: &Target) -> Result<(), WalsenderError> {
        let config = &target.config;
        let user = config
            .get_user()
            .ok_or_else(|| WalsenderError::Config("no user".into()))?
            .to_owned();
        let database = config.get_dbname().unwrap_or(&user).to_owned();
        let mut parameters = vec![
            ("user", user.as_str()),
            ("database", database.as_str()),
            ("replication", "database"),
            (
                "application_name",
                config.get_application_name().unwrap_or("clustera-relay"),
            ),
            ("client_encoding", "UTF8"),
            // pgoutput writes values as text in the session's settings; these are the
            // ones the relay's event building (and clustera-debezium's encoders) read.
            ("DateStyle", "ISO"),
            ("TimeZone", "UTC"),
            ("IntervalStyle", "postgres"),
            ("bytea_output", "hex"),
            ("extra_float_digits", "3"),
        ];
        if let Some(options) = config.get_options() {
            parameters.push(("options", options));
        }
        frontend::startup_message(parameters, &mut self.output)?;
        self.flush().await?;
        let password = config.get_password().map(<[u8]>::to_vec);
        let need_password = || {
            password.clone().ok_or_else(|| {
                WalsenderError::Config("the server asks for a password and none is set".into())
            })
        };
        loop {
            match self.expect_message().await? {
                backend::Message::AuthenticationOk => break,
                backend::Message::AuthenticationCleartextPassword => {
                    frontend::password_message(&need_password()?, &mut self.output)?;
                    self.flush().await?;
                }
                backend::Message::AuthenticationMd5Password(body) => {
                    let hash = postgres_protocol::authentication::md5_hash(
                        user.as_bytes(),
                        &need_password()?,
                        body.salt(),
                    );
                    frontend::password_message(hash.as_bytes(), &mut self.output)?;
                    self.flush().await?;
                }
                backend::Message::AuthenticationSasl(body) => {
                    let mut mechanisms = body.mechanisms();
                    let mut scram = false;
                    while let Some(m) = mechanisms.next()? {
                        scram |= m == sasl::SCRAM_SHA_256;
                    }
                    if !scram {
                        return Err(WalsenderError::Protocol(
                            "the server offers no SASL mechanism this client knows (SCRAM-SHA-256)"
                                .into(),
                        ));
                    }
                    self.scram(&need_password()?).await?;
                }
                backend::Message::ErrorResponse(body) => return Err(body.into()),
                _ => return Err(WalsenderError::Protocol(
                    "unsupported authentication method (use trust, password, md5 or scram-sha-256)"
                        .into(),
                )),
            }
        }
        loop {
            match self.expect_message().await? {
                backend::Message::ReadyForQuery(_) => return Ok(()),
                backend::Message::ErrorResponse(body) => return Err(body.into()),
                _ => {}
            }
        }
    }

    async fn scram(&mut self, password: &[u8]) -> Result<(), WalsenderError> {
        let mut scram = ScramSha256::new(password, ChannelBinding::unsupported());
        frontend::sasl_initial_response(sasl::SCRAM_SHA_256, scram.message(), &mut self.output)?;
        self.flush().await?;
        match self.expect_message().await? {
            backend::Message::AuthenticationSaslContinue(body) => scram.update(body.data())?,
            backend::Message::ErrorResponse(body) => return Err(body.into()),
            _ => {
                return Err(WalsenderError::Protocol(
                    "SCRAM: expected a challenge".into(),
                ))
            }
        }
        frontend::sasl_response(scram.message(), &mut self.output)?;
        self.flush().await?;
        match self.expect_message().await? {
            backend::Message::AuthenticationSaslFinal(body) => Ok(scram.finish(body.data())?),
            backend::Message::ErrorResponse(body) => Err(body.into()),
            _ => Err(WalsenderError::Protocol(
                "SCRAM: expected the server's signature".into(),
            )),
        }
    }

    /// Sends `START_REPLICATION` (see `clustera_pgoutput::replication`) and waits until the
    /// stream has started. A refusal (missing slot, slot active elsewhere, missing
    /// publication) is the server's error.
    pub async fn start(&mut self, command: &str) -> Result<(), WalsenderError> {
        frontend::query(command, &mut self.output)?;
        self.flush().await?;
        loop {
            match self.read().await? {
                Incoming::CopyBoth => return Ok(()),
                Incoming::Message(backend::Message::ErrorResponse(body)) => return Err(body.into()),
                Incoming::Message(backend::Message::NoticeResponse(_)) => {}
                Incoming::Message(_) => {
                    return Err(WalsenderError::Protocol(
                        "START_REPLICATION did not start a CopyBoth stream".into(),
                    ))
                }
            }
        }
    }

    /// Runs a replication command that answers with rows (`CREATE_REPLICATION_SLOT`,
    /// `IDENTIFY_SYSTEM`): each row's fields as text (`None` for NULL).
    pub async fn query(
        &mut self,
        command: &str,
    ) -> Result<Vec<Vec<Option<String>>>, WalsenderError> {
        frontend::query(command, &mut self.output)?;
        self.flush().await?;
        let mut rows = Vec::new();
        let mut failed = None;
        loop {
            match self.expect_message().await? {
                backend::Message::DataRow(row) => {
                    let buffer = row.buffer();
                    let fields = row
                        .ranges()
                        .map(|range| {
                            Ok(range.map(|r| String::from_utf8_lossy(&buffer[r]).into_owned()))
                        })
                        .collect()?;
                    rows.push(fields);
                }
                backend::Message::ErrorResponse(body) => failed = Some(body.into()),
                backend::Message::ReadyForQuery(_) => {
                    return match failed {
                        Some(e) => Err(e),
                        None => Ok(rows),
                    }
                }
                _ => {}
            }
        }
    }

    /// The next `CopyData` payload of the stream. Cancel-safe: what was read stays buffered
    /// for the next call.
    pub async fn next(&mut self) -> Result<Bytes, WalsenderError> {
        loop {
            match self.read().await? {
                Incoming::Message(backend::Message::CopyData(body)) => return Ok(body.into_bytes()),
                Incoming::Message(backend::Message::ErrorResponse(body)) => return Err(body.into()),
                // The server ends the stream when it shuts down (CopyDone, then the
                // command's completion): like a lost connection, the server is going away.
                Incoming::Message(
                    backend::Message::CopyDone
                    | backend::Message::CommandComplete(_)
                    | backend::Message::ReadyForQuery(_),
                ) => return Err(WalsenderError::Closed),
                Incoming::Message(
                    backend::Message::NoticeResponse(_) | backend::Message::ParameterStatus(_),
                ) => {}
                Incoming::Message(_) | Incoming::CopyBoth => {
                    return Err(WalsenderError::Protocol(
                        "unexpected message in the replication stream".into(),
                    ))
                }
            }
        }
    }

    /// Sends a standby status update (a `CopyData` payload from
    /// `clustera_pgoutput::replication::standby_status_update`).
    pub async fn send(&mut self, payload: &[u8]) -> Result<(), WalsenderError> {
        frontend::CopyData::new(payload)?.write(&mut self.output);
        self.flush().await
    }

    /// Ends the stream and the session politely (best effort).
    pub async fn close(mut self) {
        frontend::copy_done(&mut self.output);
        frontend::terminate(&mut self.output);
        let _ = self.flush().await;
        let _ = self.io.shutdown().await;
    }

    async fn flush(&mut self) -> Result<(), WalsenderError> {
        self.io.write_all(&self.output).await?;
        self.output.clear();
        self.io.flush().await?;
        Ok(())
    }

    async fn expect_message(&mut self) -> Result<backend::Message, WalsenderError> {
        match self.read().await? {
            Incoming::Message(m) => Ok(m),
            Incoming::CopyBoth => Err(WalsenderError::Protocol(
                "unexpected CopyBothResponse".into(),
            )),
        }
    }

    /// The next message; cancel-safe (only the read awaits, and it keeps what it read).
    async fn read(&mut self) -> Result<Incoming, WalsenderError> {
        loop {
            if let Some(header) = backend::Header::parse(&self.input)? {
                let total = usize::try_from(header.len())
                    .map_err(|_| WalsenderError::Protocol("negative message length".into()))?
                    + 1;
                if header.tag() == b'W' {
                    if self.input.len() >= total {
                        self.input.advance(total);
                        return Ok(Incoming::CopyBoth);
                    }
                } else if let Some(m) = backend::Message::parse(&mut self.input)? {
                    return Ok(Incoming::Message(m));
                }
                self.input.reserve(total.saturating_sub(self.input.len()));
            }
            if self.input.capacity() - self.input.len() < 8192 {
                self.input.reserve(READ_CHUNK);
            }
            if self.io.read_buf(&mut self.input).await? == 0 {
                return Err(WalsenderError::Closed);
            }
        }
    }
}
