//! Read models and processed-markers. The PostgreSQL store keeps documents as JSONB, through a
//! bounded pool of connections (`deadpool-postgres`) that replaces broken connections: after
//! PostgreSQL restarts, the next writes get new connections, and until then they fail with
//! an error of kind [`ErrorKind::Unavailable`] (see [`crate::pg`] for the rule), which the
//! processor retries for as long as it lasts.

use std::collections::HashSet;
use std::future::Future;
use std::time::Duration;

use clustera::infra::env::{number, Vars};
use clustera::infra::ConfigError;
use clustera::ErrorKind;
use deadpool_postgres::{Manager, ManagerConfig, Pool, PoolError, RecyclingMethod, Runtime};
use serde_json::Value;
use tokio_postgres::{NoTls, Statement};

use crate::fold::fold;
use crate::handler::DocOp;

/// A store failure; [`StoreError::kind`] says whether retrying can help.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database refused or was unreachable.
    #[error("postgres: {0}")]
    Postgres(#[from] tokio_postgres::Error),
    /// No connection from the pool: the server cannot be reached, or every connection stayed
    /// busy past the wait timeout.
    #[error("postgres pool: {0}")]
    Pool(#[from] PoolError),
    /// The pool's settings are unusable (a malformed URL).
    #[error("postgres pool: {0}")]
    Config(String),
}

impl StoreError {
    /// The kind of the failure: a statement's error by [`crate::pg`]'s rule; any failure to
    /// get a connection (refused, timed out, even refused credentials) is `Unavailable`, since
    /// it says nothing about the event being written.
    pub fn kind(&self) -> ErrorKind {
        match self {
            StoreError::Postgres(e) => crate::pg::error_kind(e),
            StoreError::Pool(PoolError::NoRuntimeSpecified) | StoreError::Config(_) => {
                ErrorKind::Permanent
            }
            StoreError::Pool(_) => ErrorKind::Unavailable,
        }
    }
}

/// One handler's writes for one event.
#[derive(Debug, Clone, Copy)]
pub struct Write<'a> {
    /// The handler: with the event id, the processed-marker's key.
    pub handler: &'a str,
    /// The event.
    pub event_id: &'a str,
    /// What the handler writes.
    pub ops: &'a [DocOp],
}

/// Where handlers' writes go.
pub trait Store: Send + Sync {
    /// Applies `ops` and records `(handler, event_id)` atomically. Returns `false`, changing
    /// nothing, if that pair was already recorded.
    fn apply(
        &self,
        handler: &str,
        event_id: &str,
        ops: &[DocOp],
    ) -> impl Future<Output = Result<bool, StoreError>> + Send;

    /// Applies several writes in order, each exactly as [`apply`](Self::apply) would (a write
    /// whose marker exists changes nothing); returns, per write, whether it was applied. A
    /// store may do it in one transaction, all or nothing; the default applies them one by
    /// one.
    fn apply_all(
        &self,
        writes: &[Write<'_>],
    ) -> impl Future<Output = Result<Vec<bool>, StoreError>> + Send {
        async move {
            let mut applied = Vec::with_capacity(writes.len());
            for w in writes {
                applied.push(self.apply(w.handler, w.event_id, w.ops).await?);
            }
            Ok(applied)
        }
    }
}

/// The store's connection pool: bounded, with timeouts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PoolSettings {
    /// Most connections open at once (`CLUSTERA_PG_POOL_SIZE`, default 4): enough for the
    /// partitions one consumer usually holds to write concurrently.
    pub max_size: usize,
    /// How long opening a connection may take (`CLUSTERA_PG_CONNECT_TIMEOUT_MS`, default 5 s).
    pub connect_timeout: Duration,
    /// How long a write waits for a free connection (`CLUSTERA_PG_WAIT_TIMEOUT_MS`, default
    /// 10 s) before failing as unavailable.
    pub wait_timeout: Duration,
}

impl Default for PoolSettings {
    fn default() -> Self {
        Self {
            max_size: 4,
            connect_timeout: Duration::from_secs(5),
            wait_timeout: Duration::from_secs(10),
        }
    }
}

impl PoolSettings {
    /// From the `CLUSTERA_PG_*` variables; unset ones keep their defaults.
    pub fn from_vars(var: Vars<'_>) -> Result<Self, ConfigError> {
        let d = Self::default();
        let ms = |name: &str, default: Duration| -> Result<Duration, ConfigError> {
            Ok(number::<u64>(var, name)?.map_or(default, Duration::from_millis))
        };
        let max_size = number::<usize>(var, "CLUSTERA_PG_POOL_SIZE")?.unwrap_or(d.max_size);
        if max_size == 0 {
            return Err(ConfigError::invalid(
                "CLUSTERA_PG_POOL_SIZE",
                "must be at least 1",
            ));
        }
        Ok(Self {
            max_size,
            connect_timeout: ms("CLUSTERA_PG_CONNECT_TIMEOUT_MS", d.connect_timeout)?,
            wait_timeout: ms("CLUSTERA_PG_WAIT_TIMEOUT_MS", d.wait_timeout)?,
        })
    }

    /// From the process environment.
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_vars(&clustera::infra::env::env_var)
    }
}

/// Documents in `read_models(collection, id, doc jsonb)`, markers in
/// `processed_events(handler, event_id)`, written through a pool of connections.
pub struct PgStore {
    pool: Pool,
}

/// The store's statements, prepared once per connection (the pool's statement cache).
struct Prepared {
    upsert: Statement,
    merge: Statement,
    increment: Statement,
    add_to_set: Statement,
    marker: Statement,
    markers: Statement,
}

impl Prepared {
    async fn of(client: &deadpool_postgres::Client) -> Result<Self, tokio_postgres::Error> {
        let (upsert, merge, increment, add_to_set, marker, markers) = futures::try_join!(
            client.prepare_cached(UPSERT),
            client.prepare_cached(MERGE),
            client.prepare_cached(INCREMENT),
            client.prepare_cached(ADD_TO_SET),
            client.prepare_cached(MARKER),
            client.prepare_cached(MARKERS),
        )?;
        Ok(Self {
            upsert,
            merge,
            increment,
            add_to_set,
            marker,
            markers,
        })
    }

    /// The operation's prepared statement and parameters.
    fn statement<'a>(&'a self, op: &'a DocOp) -> (&'a Statement, Params<'a>) {
        match op {
            DocOp::Upsert {
                collection,
                id,
                doc,
            } => (&self.upsert, vec![collection, id, doc]),
            DocOp::Merge {
                collection,
                id,
                patch,
            } => (&self.merge, vec![collection, id, patch]),
            DocOp::Increment {
                collection,
                id,
                field,
                by,
            } => (&self.increment, vec![collection, id, field, by]),
            DocOp::AddToSet {
                collection,
                id,
                field,
                value,
            } => (&self.add_to_set, vec![collection, id, field, value]),
        }
    }
}

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS read_models (
    collection text NOT NULL,
    id text NOT NULL,
    doc jsonb NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (collection, id)
);
CREATE TABLE IF NOT EXISTS processed_events (
    handler text NOT NULL,
    event_id text NOT NULL,
    processed_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (handler, event_id)
);";

impl PgStore {
    /// Connects with the default [`PoolSettings`] and creates the tables if needed.
    pub async fn connect(url: &str) -> Result<Self, StoreError> {
        Self::connect_with(url, &PoolSettings::default()).await
    }

    /// Connects with `settings` and creates the tables if needed (so an unreachable server
    /// at start is an error; later outages are not).
    pub async fn connect_with(url: &str, settings: &PoolSettings) -> Result<Self, StoreError> {
        let mut config: tokio_postgres::Config = url
            .parse()
            .map_err(|e: tokio_postgres::Error| StoreError::Config(format!("DATABASE_URL: {e}")))?;
        config.connect_timeout(settings.connect_timeout);
        let manager = Manager::from_config(
            config,
            NoTls,
            ManagerConfig {
                // A closed connection (the server restarted) is replaced when taken.
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(manager)
            .max_size(settings.max_size)
            .runtime(Runtime::Tokio1)
            .wait_timeout(Some(settings.wait_timeout))
            .create_timeout(Some(settings.connect_timeout))
            .recycle_timeout(Some(settings.connect_timeout))
            .build()
            .map_err(|e| StoreError::Config(e.to_string()))?;
        pool.get().await?.batch_execute(SCHEMA).await?;
        Ok(Self { pool })
    }

    /// One document, for tests and verification.
    pub async fn document(&self, collection: &str, id: &str) -> Result<Option<Value>, StoreError> {
        let row = self
            .pool
            .get()
            .await?
            .query_opt(
                "SELECT doc FROM read_models WHERE collection = $1 AND id = $2",
                &[&collection, &id],
            )
            .await?;
        Ok(row.map(|r| r.get(0)))
    }

    /// Every document, ordered, for comparing states.
    pub async fn all_documents(&self) -> Result<Vec<(String, String, Value)>, StoreError> {
        let rows = self
            .pool
            .get()
            .await?
            .query(
                "SELECT collection, id, doc FROM read_models ORDER BY 1, 2",
                &[],
            )
            .await?;
        Ok(rows
            .iter()
            .map(|r| (r.get(0), r.get(1), r.get(2)))
            .collect())
    }
}

/// Each operation's statement; parameters are `$1` collection, `$2` id, then the op's own.
const UPSERT: &str = "INSERT INTO read_models (collection, id, doc) VALUES ($1, $2, $3)
    ON CONFLICT (collection, id) DO UPDATE SET doc = EXCLUDED.doc, updated_at = now()";
const MERGE: &str = "INSERT INTO read_models (collection, id, doc) VALUES ($1, $2, $3)
    ON CONFLICT (collection, id) DO UPDATE SET doc = read_models.doc || EXCLUDED.doc, updated_at = now()";
const INCREMENT: &str = "INSERT INTO read_models (collection, id, doc) VALUES ($1, $2, jsonb_build_object($3::text, $4::bigint))
    ON CONFLICT (collection, id) DO UPDATE SET doc = jsonb_set(read_models.doc, ARRAY[$3::text],
        to_jsonb(COALESCE((read_models.doc->>$3::text)::bigint, 0) + $4::bigint)), updated_at = now()";
const ADD_TO_SET: &str = "INSERT INTO read_models (collection, id, doc) VALUES ($1, $2, jsonb_build_object($3::text, jsonb_build_array($4::jsonb)))
    ON CONFLICT (collection, id) DO UPDATE SET doc = CASE
        WHEN COALESCE(read_models.doc->$3::text, '[]'::jsonb) @> jsonb_build_array($4::jsonb) THEN read_models.doc
        ELSE jsonb_set(read_models.doc, ARRAY[$3::text], COALESCE(read_models.doc->$3::text, '[]'::jsonb) || jsonb_build_array($4::jsonb))
    END, updated_at = now()";
const MARKER: &str =
    "INSERT INTO processed_events (handler, event_id) VALUES ($1, $2) ON CONFLICT DO NOTHING";
/// Many markers at once; returns the pairs that were new.
const MARKERS: &str = "INSERT INTO processed_events (handler, event_id)
    SELECT * FROM unnest($1::text[], $2::text[]) ON CONFLICT DO NOTHING RETURNING handler, event_id";

type Params<'a> = Vec<&'a (dyn tokio_postgres::types::ToSql + Sync)>;

impl Store for PgStore {
    async fn apply(
        &self,
        handler: &str,
        event_id: &str,
        ops: &[DocOp],
    ) -> Result<bool, StoreError> {
        let mut client = self.pool.get().await?;
        let prepared = Prepared::of(&client).await?;
        let statements: Vec<_> = ops.iter().map(|op| prepared.statement(op)).collect();
        let tx = client.transaction().await?;
        // The marker and the writes are pipelined on the connection (one round trip instead of
        // one per statement). If the marker was already there, the writes are rolled back.
        let marker_params: Params<'_> = vec![&handler, &event_id];
        let marker = tx.execute(&prepared.marker, &marker_params);
        let writes = futures::future::try_join_all(
            statements
                .iter()
                .map(|(statement, params)| tx.execute(*statement, params)),
        );
        let (marked, written) = futures::future::join(marker, writes).await;
        if marked? != 1 {
            tx.rollback().await?;
            return Ok(false);
        }
        written?;
        tx.commit().await?;
        Ok(true)
    }

    /// One transaction: the markers in one statement, then the writes of the new ones,
    /// folded (see [`crate::fold`]) and pipelined in order.
    async fn apply_all(&self, writes: &[Write<'_>]) -> Result<Vec<bool>, StoreError> {
        if writes.is_empty() {
            return Ok(Vec::new());
        }
        let mut client = self.pool.get().await?;
        let prepared = Prepared::of(&client).await?;
        let handlers: Vec<&str> = writes.iter().map(|w| w.handler).collect();
        let events: Vec<&str> = writes.iter().map(|w| w.event_id).collect();
        let tx = client.transaction().await?;
        let mut fresh: HashSet<(String, String)> = tx
            .query(&prepared.markers, &[&handlers, &events])
            .await?
            .iter()
            .map(|r| (r.get(0), r.get(1)))
            .collect();
        // A pair twice in one batch (a redelivery) is applied once: its first time.
        let applied: Vec<bool> = writes
            .iter()
            .map(|w| fresh.remove(&(w.handler.to_owned(), w.event_id.to_owned())))
            .collect();
        let folded = fold(
            writes
                .iter()
                .zip(&applied)
                .filter(|(_, new)| **new)
                .flat_map(|(w, _)| w.ops),
        );
        let statements: Vec<_> = folded
            .in_order
            .iter()
            .copied()
            .chain(&folded.increments)
            .map(|op| prepared.statement(op))
            .collect();
        futures::future::try_join_all(
            statements
                .iter()
                .map(|(statement, params)| tx.execute(*statement, params)),
        )
        .await?;
        tx.commit().await?;
        Ok(applied)
    }
}

#[cfg(test)]
mod tests {
    use deadpool_postgres::TimeoutType;

    use super::*;

    #[test]
    fn a_pool_that_cannot_hand_out_a_connection_is_unavailable() {
        for e in [
            PoolError::Timeout(TimeoutType::Wait),
            PoolError::Timeout(TimeoutType::Create),
            PoolError::Closed,
        ] {
            assert_eq!(StoreError::Pool(e).kind(), ErrorKind::Unavailable);
        }
    }

    #[test]
    fn pool_settings_come_from_the_clustera_pg_variables() {
        let vars = |name: &str| match name {
            "CLUSTERA_PG_POOL_SIZE" => Some("9".to_owned()),
            "CLUSTERA_PG_WAIT_TIMEOUT_MS" => Some("250".to_owned()),
            _ => None,
        };
        let s = PoolSettings::from_vars(&vars).unwrap();
        assert_eq!(
            (s.max_size, s.wait_timeout, s.connect_timeout),
            (9, Duration::from_millis(250), Duration::from_secs(5))
        );
        let zero = |name: &str| (name == "CLUSTERA_PG_POOL_SIZE").then(|| "0".to_owned());
        assert_eq!(
            PoolSettings::from_vars(&zero).unwrap_err().variable,
            "CLUSTERA_PG_POOL_SIZE"
        );
    }
}
