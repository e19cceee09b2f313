//! Wake-ups for the relay: a statement-level trigger on the outbox table sends a notification
//! when an inserting transaction commits, so the relay reads new events at once instead of
//! waiting for its next poll. Notifications are only a hint: the relay still polls, slowly,
//! in case one is lost (a dropped listener connection, a table without the trigger).

use std::sync::Arc;

use futures::StreamExt;
use tokio::sync::Notify;
use tokio_postgres::{AsyncMessage, Client, NoTls};

/// The channel `clustera outbox init`'s trigger notifies.
pub const CHANNEL: &str = "clustera_outbox";

/// A connection listening on the outbox's channel.
pub struct Wakeups {
    notify: Arc<Notify>,
    /// Kept so the listening connection stays open.
    _client: Client,
}

impl Wakeups {
    /// Connects to `url` and listens on `channel`.
    pub async fn listen(url: &str, channel: &str) -> Result<Self, tokio_postgres::Error> {
        let (client, mut connection) = tokio_postgres::connect(url, NoTls).await?;
        let notify = Arc::new(Notify::new());
        let wake = notify.clone();
        tokio::spawn(async move {
            let mut messages = futures::stream::poll_fn(move |cx| connection.poll_message(cx));
            while let Some(message) = messages.next().await {
                match message {
                    Ok(AsyncMessage::Notification(_)) => wake.notify_one(),
                    Ok(_) => {}
                    Err(e) => {
                        tracing::warn!(error = %e, "outbox listener connection ended; the relay falls back to polling");
                        return;
                    }
                }
            }
        });
        client
            .batch_execute(&format!("LISTEN {}", super::quote_ident(channel)))
            .await?;
        Ok(Self {
            notify,
            _client: client,
        })
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
