//! Wake-ups for the relay: a statement-level trigger on the outbox table sends a notification
//! when an inserting transaction commits, so the relay reads new events at once instead of
//! waiting for its next poll. Notifications are only a hint: the relay still polls, slowly,
//! in case one is lost (a dropped listener connection, a table without the trigger).

use std::sync::Arc;

use futures::StreamExt;
use tokio::sync::Notify;
use tokio::task::JoinHandle;
use tokio_postgres::{AsyncMessage, Client, NoTls};

/// The channel `clustera outbox init`'s trigger notifies.
pub const CHANNEL: &str = "clustera_outbox";

/// A connection listening on the outbox's channel. When it is lost (PostgreSQL restarting),
/// the relay falls back to polling while it reconnects with backoff, and is woken once after
/// each reconnection for what was committed meanwhile.
pub struct Wakeups {
    notify: Arc<Notify>,
    /// Keeps the listener (and its reconnections) going; stopped when dropped.
    listener: JoinHandle<()>,
}

impl Drop for Wakeups {
    fn drop(&mut self) {
        self.listener.abort();
    }
}

/// One listening session: the client (kept so the connection stays open) and the task that
/// reads its notifications, which ends when the connection does.
async fn listen_once(
    url: &str,
    channel: &str,
    notify: &Arc<Notify>,
) -> Result<(Client, JoinHandle<()>), tokio_postgres::Error> {
    let (client, mut connection) = tokio_postgres::connect(url, NoTls).await?;
    let wake = notify.clone();
    let reader = tokio::spawn(async move {
        let mut messages = futures::stream::poll_fn(move |cx| connection.poll_message(cx));
        while let Some(message) = messages.next().await {
            match message {
                Ok(AsyncMessage::Notification(_)) => wake.notify_one(),
                Ok(_) => {}
                Err(e) => {
                    tracing::warn!(error = %e, "outbox listener connection ended; the relay polls until it is back");
                    return;
                }
            }
        }
    });
    client
        .batch_execute(&format!("LISTEN {}", super::quote_ident(channel)))
        .await?;
    Ok((client, reader))
}

impl Wakeups {
    /// Connects to `url` and listens on `channel` (an error if it cannot now); reconnects
    /// whenever the connection is lost later.
    pub async fn listen(url: &str, channel: &str) -> Result<Self, tokio_postgres::Error> {
        let notify = Arc::new(Notify::new());
        let mut session = listen_once(url, channel, &notify).await?;
        let (url, channel, wake) = (url.to_owned(), channel.to_owned(), notify.clone());
        let listener = tokio::spawn(async move {
            loop {
                let (client, reader) = session;
                let _ = reader.await;
                drop(client);
                let mut delays = crate::pg::backoff();
                session = loop {
                    match listen_once(&url, &channel, &wake).await {
                        Ok(s) => break s,
                        Err(e) if crate::pg::is_unavailable(&e) => {
                            let delay = delays.next().unwrap_or(crate::pg::MAX_BACKOFF);
                            tokio::time::sleep(delay).await;
                        }
                        // Not a restart (say, the role lost its rights): polling goes on.
                        Err(e) => {
                            tracing::error!(error = %e, "outbox listener cannot reconnect; the relay only polls");
                            return;
                        }
                    }
                };
                tracing::info!("outbox listener reconnected");
                wake.notify_one();
            }
        });
        Ok(Self { notify, listener })
    }

    /// Resolves at the next notification (at once if one came since the last call).
    pub async fn notified(&self) {
        self.notify.notified().await;
    }
}

/// The trigger that notifies `channel` once per inserting statement, at commit.
pub(crate) fn trigger_sql(schema: &str, table: &str, channel: &str) -> String {
    use super::quote_ident as q;
    let function = format!("{}.{}", q(schema), q(&format!("{table}_notify")));
    let literal = channel.replace('\'', "''");
    format!(
        "CREATE OR REPLACE FUNCTION {function}() RETURNS trigger LANGUAGE plpgsql AS $$
         BEGIN PERFORM pg_notify('{literal}', ''); RETURN NULL; END $$;
         DROP TRIGGER IF EXISTS clustera_notify ON {schema}.{table};
         CREATE TRIGGER clustera_notify AFTER INSERT ON {schema}.{table}
             FOR EACH STATEMENT EXECUTE FUNCTION {function}();",
        schema = q(schema),
        table = q(table),
    )
}
