//! Kernels: every instance that reports to the status topic, with its health and rates.

use std::sync::Arc;

use axum::extract::State as Extract;
use clustera::telemetry::status::StatusRecord;
use maud::{html, Markup};

use super::layout::Frame;
use crate::clock;
use crate::State;

/// The instances' table.
pub fn table(kernels: &[StatusRecord], now: u64) -> Markup {
    html! {
        @if kernels.is_empty() {
            p.muted { "No kernel has reported yet. Kernels publish their status every "
                "CLUSTERA_STATUS_INTERVAL_MS (10 s) to the status topic unless CLUSTERA_STATUS_TOPIC=off." }
        } @else {
            table #kernels {
                tr { th { "kernel" } th { "group" } th { "host" } th { "pid" } th { "state" } th { "uptime" }
                     th.num { "msg/s" } th.num { "errors/s" } th.num { "retries/s" } th.num { "dead letters/s" }
                     th.num { "in flight" } th.num { "partitions" } th.num { "processed" } th { "last report" } }
                @for k in kernels {
                    @let stale = k.is_stale(now);
                    tr.kernel {
                        td { (k.kernel) }
                        td { a href={ "/groups/" (k.group) } { (k.group) } }
                        td { (k.host) } td { (k.pid) }
                        td {
                            @if stale { span.bad { "down" } }
                            @else if k.live && k.ready { span.ok { "up" } }
                            @else if k.live { span.warn { "starting" } }
                            @else { span.bad { "unhealthy" } }
                            @for p in &k.problems { div.muted { (p) } }
                        }
                        td { (clock::duration_s(k.uptime_s(now))) }
                        td.num { (format!("{:.1}", k.processed_per_s)) }
                        td.num { (format!("{:.2}", k.errors_per_s)) }
                        td.num { (format!("{:.2}", k.retries_per_s)) }
                        td.num { (format!("{:.2}", k.dead_lettered_per_s)) }
                        td.num { (k.in_flight) }
                        td.num { (k.assigned_partitions) }
                        td.num { (k.processed) }
                        td { (clock::duration_s(now.saturating_sub(k.at_ms) / 1000)) " ago" }
                    }
                }
            }
        }
    }
}

/// `GET /kernels`.
pub async fn page(Extract(state): Extract<Arc<State>>) -> Markup {
    let now = crate::now_ms();
    let kernels = state.kernels();
    let body = html! {
        p.muted { "From the status topic " code { (state.status.topic()) } ": one record per instance, "
            "a tombstone on a clean stop; an instance silent for three intervals is shown down." }
        (table(&kernels, now))
    };
    super::layout::page(
        &state,
        "Kernels",
        Frame {
            nav: "/kernels",
            refresh: Some(5),
            ..Frame::default()
        },
        body,
    )
}
