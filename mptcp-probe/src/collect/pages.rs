//! The collector's pages, rendered on the server with no external asset: a report for the holder
//! of its token (`/reports/{id}?token=`), the aggregate across vantage points (`/`), and the
//! open data behind it (`/data/paths.csv`, `/data/paths.json`: per path, its day, network kind,
//! usability and verdicts; nothing that names a client).

use std::{collections::BTreeMap, sync::Arc, time::Duration};

use axum::{
    extract::State,
    http::{header, StatusCode},
    response::{IntoResponse, Response},
    Json,
};
use maud::{html, Markup, PreEscaped, DOCTYPE};
use mptcp_probe_model::{NetworkKind, Report, Verdict};
use serde_json::json;

use super::{
    api::{Api, ReportRequest},
    chart::{self, Bar, Series},
    store::{Aggregate, PathRow},
};
use crate::output::table;

const STYLE: &str =
    "body{font:15px/1.45 system-ui,sans-serif;max-width:60rem;margin:2rem auto;padding:0 1rem;color:#222}\
h1{font-size:1.5rem}h2{font-size:1.15rem;margin-top:2rem}table{border-collapse:collapse;margin:.5rem 0}\
th,td{border-bottom:1px solid #ddd;padding:.25rem .6rem;text-align:left;vertical-align:top}\
.problem{color:#b00020;font-weight:600}.ok{color:#1b5e20;font-weight:600}.muted{color:#666}\
.answer{font-size:1.1rem;padding:.6rem .8rem;border-left:4px solid #0072b2;background:#f3f7fb}\
dl{display:grid;grid-template-columns:max-content auto;gap:.2rem 1rem}dt{color:#555}dd{margin:0}\
pre{background:#f6f6f6;padding:.6rem;overflow-x:auto}.chart text{font:12px system-ui,sans-serif}";

fn page(title: &str, body: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) }
                style { (PreEscaped(STYLE)) }
            }
            body {
                (body)
                footer class="muted" { p { "mptcp-probe collector " (env!("CARGO_PKG_VERSION")) " · " a href="/" { "all paths" } } }
            }
        }
    }
}

/// An error as a page, with the status.
fn error_page(status: StatusCode, why: &str) -> Response {
    (status, page("mptcp-probe: error", html! { h1 { (status.as_u16()) " " (status.canonical_reason().unwrap_or("")) } p id="error" { (why) } }))
        .into_response()
}

fn verdict_class(v: Verdict) -> &'static str {
    if v.is_problem() {
        "problem"
    } else if v == Verdict::MptcpOk {
        "ok"
    } else {
        "muted"
    }
}

fn verdict_list(vs: &[Verdict]) -> Markup {
    html! {
        @for (i, v) in vs.iter().enumerate() {
            @if i > 0 { ", " }
            span class=(verdict_class(*v)) data-verdict=(v.as_str()) { (v.as_str()) }
        }
        @if vs.is_empty() { span class="muted" { "none" } }
    }
}

fn date(seconds: i64) -> String {
    let t = std::time::UNIX_EPOCH + Duration::from_secs(seconds.max(0) as u64);
    humantime::format_rfc3339_seconds(t).to_string()
}

fn day(day: i64) -> String {
    date(day * 86_400)[..10].to_string()
}

/// The page of one report.
pub fn report_page(r: &Report, received_at: i64, trace: Option<(i64, String)>, json_url: &str) -> Markup {
    let mut answer = String::new();
    table::answer(r, &mut answer);
    let c = &r.client;
    let body = html! {
        h1 { "MPTCP on the path to " (r.server.address) }
        div class="answer" id="answer" data-usable=(r.summary.mptcp_usable) {
            @for line in answer.lines() { p { (line) } }
        }
        h2 { "Verdicts" }
        p id="verdicts" { (verdict_list(&r.summary.verdicts)) }
        @if !r.summary.path_conditions.is_empty() {
            p { "Path conditions: " (verdict_list(&r.summary.path_conditions)) }
        }
        h2 { "The run" }
        dl {
            dt { "report" } dd { code { (r.id) } }
            dt { "started" } dd { (r.started_at) " (" (r.duration_ms) " ms)" }
            dt { "received" } dd { (date(received_at)) }
            dt { "server" } dd { (r.server.address) " · mptcp-probe " (r.server.version) @if r.server.observer { " · observed" } }
            dt { "client kernel" } dd { (c.kernel) }
            dt { "observer" } dd { (serde_json::to_value(c.observer).ok().and_then(|v| v.as_str().map(str::to_string)).unwrap_or_default()) }
            dt { "network" } dd id="network-kind" { (c.network_kind.map_or("not said", |k| k.as_str())) }
            @if let Some(n) = &c.note { dt { "note" } dd id="note" { (n) } }
        }
        h2 { "Tests" }
        table id="tests" {
            thead { tr { th { "test" } th { "transport" } th { "port" } th { "outcome" } th { "MPTCP" } th { "subflows" } th { "fallback reason" } th { "verdicts" } th { "ms" } } }
            tbody {
                @for t in &r.tests {
                    tr data-test=(t.name.as_str()) data-transport=(t.transport.as_str()) {
                        td { (t.name.as_str()) } td { (t.transport.as_str()) } td { (t.port) }
                        td { (t.outcome.as_str()) } td { (t.mptcp.as_str()) }
                        td { (t.subflows.map(|s| s.to_string()).unwrap_or_else(|| "-".into())) }
                        td { (t.fallback_reason.as_deref().unwrap_or("-")) }
                        td { (verdict_list(&t.verdicts)) } td { (t.duration_ms) }
                    }
                }
            }
        }
        @let findings: Vec<_> = r.tests.iter().flat_map(|t| t.evidence.findings.iter().map(move |f| (t, f))).collect();
        @if !findings.is_empty() {
            h2 { "Evidence" }
            table id="evidence" {
                thead { tr { th { "test" } th { "verdict" } th { "packet" } th { "end" } th { "expected" } th { "seen" } th { "where" } } }
                tbody {
                    @for (t, f) in findings {
                        tr {
                            td { (t.name.as_str()) " " (t.transport.as_str()) }
                            td class=(verdict_class(f.verdict)) { (f.verdict.as_str()) }
                            td { (f.packet.as_str()) } td { (f.end.as_str()) }
                            td { (f.expected) } td { (f.seen) }
                            td { (f.located.as_deref().unwrap_or("")) }
                        }
                    }
                }
            }
        }
        @if let Some(l) = &r.locate {
            h2 { "Where on the path" }
            ul id="locate" {
                @for loc in &l.locations { li { span class=(verdict_class(loc.verdict)) { (loc.verdict.as_str()) } ": " (loc.text) } }
                @for n in &l.notes { li class="muted" { (n) } }
            }
        }
        h2 { "Host" }
        @if !c.host_state.is_empty() {
            ul id="host-state" { @for h in &c.host_state { li { (h) } } }
        }
        @if !c.cannot_establish.is_empty() {
            p { "Not established without an observer: " (verdict_list(&c.cannot_establish)) }
        }
        details {
            summary { "MPTCP settings of the client (" (c.mptcp_sysctls.len()) ")" }
            table {
                @for (k, v) in &c.mptcp_sysctls {
                    tr { td { "net.mptcp." (k) } td { (serde_json::to_string(v).unwrap_or_default()) } }
                }
            }
        }
        h2 { "Trace" }
        p id="trace" {
            @match &trace {
                Some((bytes, url)) => { a href=(url) download { "the header-only trace" } " (pcapng, " (bytes) " bytes; open it with Wireshark or tshark)" }
                None => { span class="muted" { "No trace was attached (" code { "check --pcap FILE --upload URL" } " attaches one)." } }
            }
        }
        details {
            summary { "As check printed it" }
            pre { (table::table(r)) }
        }
        p { a href=(json_url) { "The report as JSON" } }
    };
    page(&format!("mptcp-probe report {}", r.id), body)
}

/// `GET /reports/{id}?token=`.
pub async fn report(State(api): State<Arc<Api>>, req: ReportRequest) -> Response {
    let id = &req.id;
    let response = match api.authorized(id, req.token()).await {
        Err(r) => {
            let status = r.status();
            let why = match status {
                StatusCode::UNAUTHORIZED => {
                    "A report is shown with its token: open the URL its upload answered with."
                }
                StatusCode::FORBIDDEN => "That is not this report's token.",
                StatusCode::NOT_FOUND => {
                    "There is no such report here (it may have been removed for its age)."
                }
                _ => "The report could not be read; try again.",
            };
            error_page(status, why)
        }
        Ok(stored) => match serde_json::from_str::<Report>(&stored.report) {
            Ok(r) => {
                let token = req.token().unwrap_or_default();
                let json_url = format!("/api/v1/reports/{id}?token={token}");
                let trace =
                    stored.trace_bytes.map(|n| (n, format!("/api/v1/reports/{id}/trace?token={token}")));
                // The page holds the token and the note: not kept by caches, not told to others.
                let headers = [(header::CACHE_CONTROL, "no-store"), (header::REFERRER_POLICY, "no-referrer")];
                (headers, report_page(&r, stored.received_at, trace, &json_url)).into_response()
            }
            Err(e) => {
                tracing::error!("collect: report {id} as stored does not parse: {e}");
                error_page(StatusCode::INTERNAL_SERVER_ERROR, "The report as stored could not be read.")
            }
        },
    };
    api.metrics.fetch(response.status().as_u16());
    response
}

/// The x axis of the chart over time: every day from the first report's to the last's, or
/// every week (from Monday) when that is more than 120 days. A bucket of the axis is `(key,
/// first day)`; [`bucket_of`] gives a day's key.
fn buckets(a: &Aggregate) -> (bool, Vec<(i64, i64)>) {
    let (Some(first), Some(last)) = (a.days.first(), a.days.last()) else { return (false, vec![]) };
    let weeks = last.0 - first.0 > 120;
    let (from, to) = (bucket_of(weeks, first.0), bucket_of(weeks, last.0));
    (weeks, (from..=to).map(|k| (k, if weeks { k * 7 - 3 } else { k })).collect())
}

/// The bucket of a day (days since 1970-01-01, a Thursday: weeks from Monday are `(d + 3) / 7`).
fn bucket_of(weeks: bool, day: i64) -> i64 {
    if weeks {
        (day + 3).div_euclid(7)
    } else {
        day
    }
}

/// The aggregate page's content.
pub fn aggregate_page(a: &Aggregate) -> Markup {
    let share = |n: i64, of: i64| if of > 0 { n as f64 / of as f64 } else { 0.0 };
    let bars: Vec<Bar> = a
        .by_verdict
        .iter()
        .map(|(v, n)| Bar { label: v.clone(), share: share(*n, a.reports), count: *n })
        .collect();
    let kind_name = |k: &Option<String>| k.clone().unwrap_or_else(|| "not said".into());
    let mut per_kind: BTreeMap<String, Vec<(String, i64)>> = BTreeMap::new();
    for (k, v, n) in &a.by_kind {
        per_kind.entry(kind_name(k)).or_default().push((v.clone(), *n));
    }
    // Over time: the share of the bucket's reports that found MPTCP usable, and of the most
    // frequent problem verdicts.
    let (weeks, keys) = buckets(a);
    let index: BTreeMap<i64, usize> = keys.iter().enumerate().map(|(i, (k, _))| (*k, i)).collect();
    let mut totals = vec![0i64; keys.len()];
    let mut usable = vec![0i64; keys.len()];
    for (d, n, u) in &a.days {
        if let Some(&i) = index.get(&bucket_of(weeks, *d)) {
            totals[i] += n;
            usable[i] += u;
        }
    }
    // A bucket without reports has no share: a gap in the line, not a zero.
    let of_bucket = |n: i64, t: i64| if t > 0 { n as f64 / t as f64 } else { f64::NAN };
    let problems: Vec<&String> = a
        .by_verdict
        .iter()
        .filter(|(v, _)| v.parse::<Verdict>().is_ok_and(|v| v.is_problem()))
        .map(|(v, _)| v)
        .take(4)
        .collect();
    let mut series = vec![Series {
        name: "MPTCP usable".into(),
        values: usable.iter().zip(&totals).map(|(u, t)| of_bucket(*u, *t)).collect(),
    }];
    for p in &problems {
        let mut counts = vec![0i64; keys.len()];
        for (d, v, n) in &a.by_day {
            if v == *p {
                if let Some(&i) = index.get(&bucket_of(weeks, *d)) {
                    counts[i] += n;
                }
            }
        }
        series.push(Series {
            name: (*p).clone(),
            values: counts.iter().zip(&totals).map(|(c, t)| of_bucket(*c, *t)).collect(),
        });
    }
    let labels: Vec<String> = keys.iter().map(|(_, first)| day(*first)).collect();
    let body = html! {
        h1 { "MPTCP across networks" }
        p {
            "What paths do to Multipath TCP (RFC 8684), from the reports of " code { "mptcp-probe check" }
            " uploaded here. A report is one path: from where its user ran the check to a server."
        }
        dl id="totals" {
            dt { "reports" } dd id="reports" { (a.reports) }
            dt { "distinct networks" } dd id="networks" { (a.networks) }
            dt { "MPTCP usable" } dd id="usable" { (format!("{:.1} %", share(a.usable, a.reports) * 100.0)) " of the paths (" (a.usable) ")" }
        }
        h2 { "Share of paths per verdict" }
        div id="by-verdict" { (chart::bars("share of paths per verdict", &bars)) }
        h2 { "Per network kind" }
        table id="by-kind" {
            thead { tr { th { "network" } th { "reports" } th { "MPTCP usable" } th { "verdicts (paths)" } } }
            tbody {
                @for (k, n, u) in &a.kinds {
                    @let name = kind_name(k);
                    tr data-kind=(name) {
                        td { (name) } td { (n) } td { (format!("{:.1} %", share(*u, *n) * 100.0)) }
                        td {
                            @if let Some(vs) = per_kind.get(&name) {
                                @for (i, (v, c)) in vs.iter().enumerate() { @if i > 0 { ", " } (v) " " (c) }
                            }
                        }
                    }
                }
            }
        }
        h2 { "Over time (" (if weeks { "weeks from Monday" } else { "days" }) ", UTC)" }
        div id="over-time" { (chart::lines("share of paths over time", &labels, &series)) }
        h2 { "Open data" }
        p {
            "Every path as a row: its day, network kind, whether MPTCP was usable and its verdicts. "
            a href="/data/paths.csv" { "CSV" } " · " a href="/data/paths.json" { "JSON" }
        }
        p class="muted" {
            "Where a report came from is kept only as a truncated prefix, to count distinct networks; "
            "it is never shown or exported. Notes are shown only to the holder of a report's token. "
            "Network kinds are as the users said: "
            @for (i, k) in NetworkKind::ALL.iter().enumerate() { @if i > 0 { ", " } (k.as_str()) } "."
        }
    };
    page("MPTCP across networks", body)
}

/// `GET /`.
pub async fn aggregate(State(api): State<Arc<Api>>) -> Response {
    match api.aggregate().await {
        Ok(a) => aggregate_page(&a).into_response(),
        Err(e) => {
            tracing::error!("collect: {e:#}");
            error_page(StatusCode::SERVICE_UNAVAILABLE, "The counts could not be read; try again.")
        }
    }
}

fn path_json(p: &PathRow) -> serde_json::Value {
    json!({ "day": day(p.day), "network_kind": p.network_kind, "mptcp_usable": p.mptcp_usable, "verdicts": p.verdicts })
}

/// The open data as CSV: `day,network_kind,mptcp_usable,verdicts` (verdicts `;`-separated).
pub fn csv(rows: &[PathRow]) -> anyhow::Result<Vec<u8>> {
    let mut w = ::csv::Writer::from_writer(Vec::new());
    w.write_record(["day", "network_kind", "mptcp_usable", "verdicts"])?;
    for p in rows {
        w.write_record([
            day(p.day).as_str(),
            p.network_kind.as_deref().unwrap_or(""),
            if p.mptcp_usable { "true" } else { "false" },
            p.verdicts.join(";").as_str(),
        ])?;
    }
    Ok(w.into_inner()?)
}

async fn paths(api: &Api) -> Result<Vec<PathRow>, Response> {
    api.store.paths().await.map_err(|e| {
        tracing::error!("collect: {e:#}");
        super::api::error(StatusCode::SERVICE_UNAVAILABLE, "the reports could not be read; try again")
    })
}

/// `GET /data/paths.csv`.
pub async fn paths_csv(State(api): State<Arc<Api>>) -> Response {
    let rows = match paths(&api).await {
        Ok(r) => r,
        Err(r) => return r,
    };
    match csv(&rows) {
        Ok(body) => ([(header::CONTENT_TYPE, "text/csv; charset=utf-8")], body).into_response(),
        Err(e) => super::api::error(StatusCode::INTERNAL_SERVER_ERROR, format!("writing the CSV: {e}")),
    }
}

/// `GET /data/paths.json`.
pub async fn paths_json(State(api): State<Arc<Api>>) -> Response {
    match paths(&api).await {
        Ok(rows) => Json(json!({ "paths": rows.iter().map(path_json).collect::<Vec<_>>() })).into_response(),
        Err(r) => r,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_open_data_names_no_client() {
        let rows = vec![
            PathRow {
                day: 20_423,
                network_kind: Some("home".into()),
                mptcp_usable: true,
                verdicts: vec!["mptcp_ok".into()],
            },
            PathRow {
                day: 20_424,
                network_kind: None,
                mptcp_usable: false,
                verdicts: vec!["nat".into(), "syn_option_stripped".into()],
            },
        ];
        let text = String::from_utf8(csv(&rows).unwrap()).unwrap();
        assert_eq!(
            text,
            "day,network_kind,mptcp_usable,verdicts\n2025-12-01,home,true,mptcp_ok\n2025-12-02,,false,nat;syn_option_stripped\n"
        );
        assert_eq!(path_json(&rows[1])["verdicts"][1], "syn_option_stripped");
    }

    #[test]
    fn the_aggregate_page_shows_the_counts_and_weeks_for_a_long_span() {
        let a = Aggregate {
            reports: 4,
            networks: 2,
            usable: 3,
            by_verdict: vec![("mptcp_ok".into(), 3), ("syn_option_stripped".into(), 1)],
            kinds: vec![(Some("home".into()), 3, 3), (None, 1, 0)],
            by_kind: vec![
                (Some("home".into()), "mptcp_ok".into(), 3),
                (None, "syn_option_stripped".into(), 1),
            ],
            days: vec![(20_000, 2, 2), (20_300, 2, 1)],
            by_day: vec![(20_300, "syn_option_stripped".into(), 1)],
        };
        let html = aggregate_page(&a).into_string();
        assert!(html.contains("<dd id=\"reports\">4</dd>"), "{html}");
        assert!(html.contains("75.0 %"));
        assert!(html.contains("weeks"), "300 days are shown in weeks");
        assert!(html.contains("data-name=\"syn_option_stripped\""));
        assert!(!html.contains(" src=") && !html.contains("href=\"http"), "no external asset");
    }
}
