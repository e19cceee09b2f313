//! The demo system's report and verifier, computed from the database itself: the outbox (when
//! each event was committed), the processed-markers (when each handler wrote it) and the read
//! models.

use hdrhistogram::Histogram;
use tokio_postgres::Client;

/// Throughput and latency of the pipeline, from outbox commit to read-model write.
#[derive(Debug, Clone)]
pub struct Report {
    /// Events in the outbox.
    pub events: u64,
    /// Events whose every handler has written.
    pub processed: u64,
    /// Events by type.
    pub per_type: Vec<(String, i64)>,
    /// Latency percentiles in milliseconds: min, avg, p50, p95, p99, max.
    pub latency_ms: [f64; 6],
    /// Events per second: average from the first outbox commit to the last read-model write,
    /// and the busiest one-second window (at least the average, for runs under a second).
    pub throughput: (f64, f64),
}

impl std::fmt::Display for Report {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let rate = if self.events == 0 {
            0.0
        } else {
            100.0 * self.processed as f64 / self.events as f64
        };
        writeln!(f, "events in outbox   {:>10}", self.events)?;
        writeln!(
            f,
            "processed          {:>10}   success rate {rate:.2}%",
            self.processed
        )?;
        for (t, n) in &self.per_type {
            writeln!(f, "  {t:<20} {n:>8}")?;
        }
        writeln!(
            f,
            "throughput         avg {:.0} events/s, peak {:.0} events/s",
            self.throughput.0, self.throughput.1
        )?;
        let [min, avg, p50, p95, p99, max] = self.latency_ms;
        write!(
            f,
            "latency (outbox commit -> read model, ms)  min {min:.1}  avg {avg:.1}  p50 {p50:.1}  p95 {p95:.1}  p99 {p99:.1}  max {max:.1}"
        )
    }
}

/// Why a report could not be computed.
#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    /// The database failed.
    #[error("postgres: {0}")]
    Postgres(#[from] tokio_postgres::Error),
    /// The latency histogram could not be built.
    #[error("histogram: {0}")]
    Histogram(String),
}

/// Computes the report. An event counts as processed when its last handler has written.
pub async fn report(client: &Client) -> Result<Report, ReportError> {
    let events: i64 = client
        .query_one("SELECT count(*) FROM activity.event_outbox", &[])
        .await?
        .get(0);
    let per_type = client
        .query(
            "SELECT event_type, count(*) FROM activity.event_outbox GROUP BY 1 ORDER BY 1",
            &[],
        )
        .await?
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    let rows = client
        .query(
            "SELECT (extract(epoch FROM max(p.processed_at) - o.created_at) * 1000000)::bigint,
                    (extract(epoch FROM max(p.processed_at)) * 1000000)::bigint
             FROM activity.event_outbox o JOIN processed_events p ON p.event_id = o.event_id::text
             GROUP BY o.event_id, o.created_at",
            &[],
        )
        .await?;
    // Microseconds, up to an hour, three significant digits.
    let mut histogram = Histogram::<u64>::new_with_bounds(1, 3_600_000_000, 3)
        .map_err(|e| ReportError::Histogram(e.to_string()))?;
    let mut finished_us = Vec::with_capacity(rows.len());
    for r in &rows {
        let us: i64 = r.get(0);
        histogram.saturating_record(u64::try_from(us.max(1)).unwrap_or(1));
        finished_us.push(r.get::<_, i64>(1));
    }
    let ms = |v: u64| v as f64 / 1000.0;
    let latency_ms = if histogram.is_empty() {
        [0.0; 6]
    } else {
        [
            ms(histogram.min()),
            histogram.mean() / 1000.0,
            ms(histogram.value_at_quantile(0.50)),
            ms(histogram.value_at_quantile(0.95)),
            ms(histogram.value_at_quantile(0.99)),
            ms(histogram.max()),
        ]
    };
    // The run: from the first outbox commit to the last read-model write.
    let span: Option<f64> = client
        .query_one(
            "SELECT extract(epoch FROM max(p.processed_at) - min(o.created_at))::float8
             FROM activity.event_outbox o JOIN processed_events p ON p.event_id = o.event_id::text",
            &[],
        )
        .await?
        .get(0);
    let average = rows.len() as f64 / span.unwrap_or(0.0).max(1e-3);
    let throughput = (average, busiest_second(&mut finished_us).max(average));
    Ok(Report {
        events: u64::try_from(events).unwrap_or(0),
        processed: rows.len() as u64,
        per_type,
        latency_ms,
        throughput,
    })
}

/// The most events finished within any one-second window (sliding, not calendar seconds).
fn busiest_second(finished_us: &mut [i64]) -> f64 {
    finished_us.sort_unstable();
    let mut start = 0;
    let mut best = 0;
    for end in 0..finished_us.len() {
        while finished_us[end] - finished_us[start] >= 1_000_000 {
            start += 1;
        }
        best = best.max(end + 1 - start);
    }
    best as f64
}

/// One failed check of the verifier.
pub type Problem = String;

/// Checks the read models against the outbox: document counts, referential integrity and
/// field completeness. Returns the problems found (empty when all checks pass).
pub async fn verify(client: &Client) -> Result<Vec<Problem>, tokio_postgres::Error> {
    let mut problems = Vec::new();
    let count = |sql: &'static str| async move {
        client.query_one(sql, &[]).await.map(|r| r.get::<_, i64>(0))
    };
    let expected_users = count("SELECT count(DISTINCT payload->>'user_id') FROM activity.event_outbox WHERE event_type = 'UserCreated'").await?;
    let users = count("SELECT count(*) FROM read_models WHERE collection = 'users'").await?;
    if users != expected_users {
        problems.push(format!(
            "users: {users} documents for {expected_users} UserCreated events"
        ));
    }
    let expected_activities =
        count("SELECT count(*) FROM activity.event_outbox WHERE event_type = 'ActivityCreated'")
            .await?;
    let activities =
        count("SELECT count(*) FROM read_models WHERE collection = 'activities'").await?;
    if activities != expected_activities {
        problems.push(format!(
            "activities: {activities} documents for {expected_activities} ActivityCreated events"
        ));
    }
    let joins =
        count("SELECT count(*) FROM activity.event_outbox WHERE event_type = 'ParticipantJoined'")
            .await?;
    let counted = count("SELECT COALESCE(sum((doc->>'participant_count')::bigint), 0)::bigint FROM read_models WHERE collection = 'activities'").await?;
    if counted != joins {
        problems.push(format!(
            "participants: {counted} counted for {joins} ParticipantJoined events"
        ));
    }
    let orphans = count(
        "SELECT count(*) FROM read_models a WHERE a.collection = 'activities'
         AND NOT EXISTS (SELECT 1 FROM read_models u WHERE u.collection = 'users' AND u.id = a.doc->>'creator_id')",
    )
    .await?;
    if orphans > 0 {
        problems.push(format!("{orphans} activities whose creator is not a user"));
    }
    let stray = count(
        "SELECT count(*) FROM read_models a, jsonb_array_elements_text(a.doc->'participants') p(user_id)
         WHERE a.collection = 'activities'
         AND NOT EXISTS (SELECT 1 FROM read_models u WHERE u.collection = 'users' AND u.id = p.user_id)",
    )
    .await?;
    if stray > 0 {
        problems.push(format!("{stray} participants who are not users"));
    }
    let incomplete_users = count(
        "SELECT count(*) FROM read_models WHERE collection = 'users' AND (doc->>'email' IS NULL OR doc->>'username' IS NULL)",
    )
    .await?;
    if incomplete_users > 0 {
        problems.push(format!(
            "{incomplete_users} users without email or username"
        ));
    }
    let incomplete_activities = count(
        "SELECT count(*) FROM read_models WHERE collection = 'activities' AND (doc->>'title' IS NULL OR doc->>'creator_id' IS NULL)",
    )
    .await?;
    if incomplete_activities > 0 {
        problems.push(format!(
            "{incomplete_activities} activities without title or creator"
        ));
    }
    Ok(problems)
}

#[cfg(test)]
mod tests {
    use super::busiest_second;

    #[test]
    fn the_busiest_second_is_a_sliding_window() {
        let mut finished = vec![5_000_000, 0, 500_000, 999_999, 1_000_000, 1_400_000];
        // 0.5 s .. 1.4 s holds four; no calendar second holds more than three.
        assert_eq!(busiest_second(&mut finished), 4.0);
        assert_eq!(busiest_second(&mut []), 0.0);
    }
}
