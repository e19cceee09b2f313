//! Read models and processed-markers. The PostgreSQL store keeps documents as JSONB.

use std::future::Future;

use serde_json::Value;
use std::collections::HashSet;

use tokio_postgres::{Client, NoTls, Statement};

use crate::fold::fold;
use crate::handler::DocOp;

/// A store failure: transient (connection, serialization) unless it says otherwise.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database refused or was unreachable.
    #[error("postgres: {0}")]
    Postgres(#[from] tokio_postgres::Error),
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

/// Documents in `read_models(collection, id, doc jsonb)`, markers in
/// `processed_events(handler, event_id)`. A few connections, so that partitions processed
/// concurrently write concurrently.
pub struct PgStore {
    connections: Vec<tokio::sync::Mutex<Connection>>,
    next: std::sync::atomic::AtomicUsize,
}

/// A connection and its prepared statements (parsed once, not per write).
struct Connection {
    client: Client,
    prepared: Prepared,
}

/// The store's statements, prepared on one connection.
struct Prepared {
    upsert: Statement,
    merge: Statement,
    increment: Statement,
    add_to_set: Statement,
    marker: Statement,
    markers: Statement,
}

impl Connection {
    async fn open(url: &str) -> Result<Self, StoreError> {
        let (client, connection) = tokio_postgres::connect(url, NoTls).await?;
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::error!(error = %e, "postgres connection ended");
            }
        });
        client.batch_execute(SCHEMA).await?;
        let prepared = Prepared {
            upsert: client.prepare(UPSERT).await?,
            merge: client.prepare(MERGE).await?,
            increment: client.prepare(INCREMENT).await?,
            add_to_set: client.prepare(ADD_TO_SET).await?,
            marker: client.prepare(MARKER).await?,
            markers: client.prepare(MARKERS).await?,
        };
        Ok(Self { client, prepared })
    }
}

impl Prepared {
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

/// Connections per store: enough for the partitions one consumer usually holds.
const CONNECTIONS: usize = 4;

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
    /// Connects and creates the tables if needed.
    pub async fn connect(url: &str) -> Result<Self, StoreError> {
        let mut connections = Vec::with_capacity(CONNECTIONS);
        for _ in 0..CONNECTIONS {
            connections.push(tokio::sync::Mutex::new(Connection::open(url).await?));
        }
        Ok(Self {
            connections,
            next: std::sync::atomic::AtomicUsize::new(0),
        })
    }

    /// A free connection if there is one, otherwise the next in turn.
    async fn connection(&self) -> tokio::sync::MutexGuard<'_, Connection> {
        for c in &self.connections {
            if let Ok(guard) = c.try_lock() {
                return guard;
            }
        }
        let i =
            self.next.fetch_add(1, std::sync::atomic::Ordering::Relaxed) % self.connections.len();
        self.connections[i].lock().await
    }

    /// One document, for tests and verification.
    pub async fn document(&self, collection: &str, id: &str) -> Result<Option<Value>, StoreError> {
        let connection = self.connection().await;
        let row = connection
            .client
            .query_opt(
                "SELECT doc FROM read_models WHERE collection = $1 AND id = $2",
                &[&collection, &id],
            )
            .await?;
        Ok(row.map(|r| r.get(0)))
    }

    /// Every document, ordered, for comparing states.
    pub async fn all_documents(&self) -> Result<Vec<(String, String, Value)>, StoreError> {
        let connection = self.connection().await;
        let rows = connection
            .client
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
        let mut connection = self.connection().await;
        let Connection { client, prepared } = &mut *connection;
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
        let mut connection = self.connection().await;
        let Connection { client, prepared } = &mut *connection;
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
