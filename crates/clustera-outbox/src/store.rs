//! Read models and processed-markers. The PostgreSQL store keeps documents as JSONB.

use std::future::Future;

use serde_json::Value;
use tokio_postgres::{Client, NoTls};

use crate::handler::DocOp;

/// A store failure: transient (connection, serialization) unless it says otherwise.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database refused or was unreachable.
    #[error("postgres: {0}")]
    Postgres(#[from] tokio_postgres::Error),
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
}

/// Documents in `read_models(collection, id, doc jsonb)`, markers in
/// `processed_events(handler, event_id)`. A few connections, so that partitions processed
/// concurrently write concurrently.
pub struct PgStore {
    clients: Vec<tokio::sync::Mutex<Client>>,
    next: std::sync::atomic::AtomicUsize,
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
        let mut clients = Vec::with_capacity(CONNECTIONS);
        for _ in 0..CONNECTIONS {
            let (client, connection) = tokio_postgres::connect(url, NoTls).await?;
            tokio::spawn(async move {
                if let Err(e) = connection.await {
                    tracing::error!(error = %e, "postgres connection ended");
                }
            });
            clients.push(tokio::sync::Mutex::new(client));
        }
        if let Some(first) = clients.first() {
            first.lock().await.batch_execute(SCHEMA).await?;
        }
        Ok(Self {
            clients,
            next: std::sync::atomic::AtomicUsize::new(0),
        })
    }

    /// A free connection if there is one, otherwise the next in turn.
    async fn client(&self) -> tokio::sync::MutexGuard<'_, Client> {
        for c in &self.clients {
            if let Ok(guard) = c.try_lock() {
                return guard;
            }
        }
        let i = self.next.fetch_add(1, std::sync::atomic::Ordering::Relaxed) % self.clients.len();
        self.clients[i].lock().await
    }

    /// One document, for tests and verification.
    pub async fn document(&self, collection: &str, id: &str) -> Result<Option<Value>, StoreError> {
        let client = self.client().await;
        let row = client
            .query_opt(
                "SELECT doc FROM read_models WHERE collection = $1 AND id = $2",
                &[&collection, &id],
            )
            .await?;
        Ok(row.map(|r| r.get(0)))
    }

    /// Every document, ordered, for comparing states.
    pub async fn all_documents(&self) -> Result<Vec<(String, String, Value)>, StoreError> {
        let client = self.client().await;
        let rows = client
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

type Params<'a> = Vec<&'a (dyn tokio_postgres::types::ToSql + Sync)>;

fn statement(op: &DocOp) -> (&'static str, Params<'_>) {
    match op {
        DocOp::Upsert {
            collection,
            id,
            doc,
        } => (UPSERT, vec![collection, id, doc]),
        DocOp::Merge {
            collection,
            id,
            patch,
        } => (MERGE, vec![collection, id, patch]),
        DocOp::Increment {
            collection,
            id,
            field,
            by,
        } => (INCREMENT, vec![collection, id, field, by]),
        DocOp::AddToSet {
            collection,
            id,
            field,
            value,
        } => (ADD_TO_SET, vec![collection, id, field, value]),
    }
}

impl Store for PgStore {
    async fn apply(
        &self,
        handler: &str,
        event_id: &str,
        ops: &[DocOp],
    ) -> Result<bool, StoreError> {
        let statements: Vec<_> = ops.iter().map(statement).collect();
        let mut client = self.client().await;
        let tx = client.transaction().await?;
        // The marker and the writes are pipelined on the connection (one round trip instead of
        // one per statement). If the marker was already there, the writes are rolled back.
        let marker_params: Params<'_> = vec![&handler, &event_id];
        let marker = tx.execute(MARKER, &marker_params);
        let writes = futures::future::try_join_all(
            statements
                .iter()
                .map(|(sql, params)| tx.execute(*sql, params)),
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
}
