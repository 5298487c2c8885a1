//! Where the collector keeps reports: SQLite (WAL) on one machine, or PostgreSQL for several
//! collectors in front of one database. Each has its migrations (`migrations/sqlite`,
//! `migrations/postgres`), applied at start; the statements are the same for both. A report is
//! one row, written in one statement: stored whole or not at all.

use std::{str::FromStr as _, time::Duration};

use anyhow::Context as _;
use sqlx::{
    postgres::PgPoolOptions,
    sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous},
    PgPool, Row as _, SqlitePool,
};

/// Runs the same code on whichever pool the store has.
macro_rules! on_pool {
    ($store:expr, $pool:ident => $body:expr) => {
        match $store {
            Store::Sqlite($pool) => $body,
            Store::Postgres($pool) => $body,
        }
    };
}

/// A database URL as it may be shown: without the password of its user part.
pub fn redacted(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else { return url.to_string() };
    match rest.split_once('@') {
        Some((user, host)) if user.contains(':') => {
            let name = user.split(':').next().unwrap_or_default();
            format!("{scheme}://{name}:***@{host}")
        }
        _ => url.to_string(),
    }
}

/// A report as it is stored.
pub struct NewReport<'a> {
    pub id: &'a str,
    pub token_sha256: &'a [u8],
    pub report_sha256: &'a [u8],
    pub received_at: i64,
    pub report: &'a str,
    pub mptcp_usable: bool,
    /// The summary's verdicts (not its path conditions).
    pub verdicts: &'a [&'a str],
    /// The summary's verdicts and path conditions: a row each, for the aggregate.
    pub counted: &'a [&'a str],
    pub network_kind: Option<&'a str>,
    /// The client's network as the operator keeps it (a truncated prefix), or nothing.
    pub client_prefix: Option<&'a str>,
}

/// What [`Store::put_trace`] found.
#[derive(Debug, PartialEq, Eq)]
pub enum TracePut {
    New,
    /// This very trace was stored before.
    Again,
    /// The report has another trace.
    Conflict,
    /// No such report.
    NoReport,
}

/// Counts across every stored report, for the aggregate page: `(verdict, reports)`,
/// `(network kind, verdict, reports)`, `(day, verdict, reports)`, and the reports of each kind
/// and day with how many of them found MPTCP usable. Days are UTC days since 1970.
#[derive(Debug, Default)]
pub struct Aggregate {
    pub reports: i64,
    pub networks: i64,
    pub usable: i64,
    pub by_verdict: Vec<(String, i64)>,
    pub kinds: Vec<(Option<String>, i64, i64)>,
    pub by_kind: Vec<(Option<String>, String, i64)>,
    pub days: Vec<(i64, i64, i64)>,
    pub by_day: Vec<(i64, String, i64)>,
}

/// A stored report's row for the open data: when (the UTC day), from which kind of network,
/// whether MPTCP was usable, its verdicts. Nothing that names the client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PathRow {
    pub day: i64,
    pub network_kind: Option<String>,
    pub mptcp_usable: bool,
    pub verdicts: Vec<String>,
}

/// What [`Store::insert`] found.
#[derive(Debug, PartialEq, Eq)]
pub enum Inserted {
    New,
    /// This very report was stored before.
    Again,
    /// Another report was stored under this id.
    Conflict,
}

pub struct Stored {
    pub token_sha256: Vec<u8>,
    pub report: String,
    pub received_at: i64,
    /// The size of its trace, when one is attached.
    pub trace_bytes: Option<i64>,
}

#[derive(Clone)]
pub enum Store {
    Sqlite(SqlitePool),
    Postgres(PgPool),
}

impl Store {
    /// Opens the database named by `url` (`sqlite://PATH`, created when missing, or
    /// `postgres://...`) and brings its schema up to date.
    pub async fn open(url: &str) -> anyhow::Result<Self> {
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            let pool = PgPoolOptions::new()
                .max_connections(8)
                .acquire_timeout(Duration::from_secs(10))
                .connect(url)
                .await
                .with_context(|| format!("connecting to the PostgreSQL database {}", redacted(url)))?;
            sqlx::migrate!("./migrations/postgres")
                .run(&pool)
                .await
                .context("bringing the database schema up to date")?;
            return Ok(Self::Postgres(pool));
        }
        let Some(path) = url.strip_prefix("sqlite://") else {
            anyhow::bail!("--db {:?}: give sqlite://PATH or postgres://...", redacted(url));
        };
        let opts = SqliteConnectOptions::from_str(&format!("sqlite://{path}"))
            .with_context(|| format!("--db {url:?}"))?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .busy_timeout(Duration::from_secs(5));
        let pool = SqlitePoolOptions::new()
            .max_connections(4)
            .connect_with(opts)
            .await
            .with_context(|| format!("opening the database {path}"))?;
        sqlx::migrate!("./migrations/sqlite")
            .run(&pool)
            .await
            .context("bringing the database schema up to date")?;
        Ok(Self::Sqlite(pool))
    }

    /// Stores a report unless its id is taken; says which. The report and its verdict rows are
    /// written in one transaction.
    pub async fn insert(&self, r: &NewReport<'_>) -> anyhow::Result<Inserted> {
        const INSERT: &str = "INSERT INTO reports \
             (id, token_sha256, report_sha256, received_at, report, mptcp_usable, verdicts, network_kind, client_prefix) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) ON CONFLICT (id) DO NOTHING";
        const VERDICT: &str = "INSERT INTO report_verdicts (report_id, verdict, network_kind, received_day) \
             VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING";
        let inserted = on_pool!(self, pool => {
            let mut tx = pool.begin().await.context("storing the report")?;
            let n = sqlx::query(INSERT)
                .bind(r.id)
                .bind(r.token_sha256)
                .bind(r.report_sha256)
                .bind(r.received_at)
                .bind(r.report)
                .bind(r.mptcp_usable)
                .bind(r.verdicts.join(","))
                .bind(r.network_kind)
                .bind(r.client_prefix)
                .execute(&mut *tx)
                .await
                .context("storing the report")?
                .rows_affected();
            if n == 1 {
                for v in r.counted {
                    sqlx::query(VERDICT)
                        .bind(r.id)
                        .bind(v)
                        .bind(r.network_kind)
                        .bind(r.received_at / 86_400)
                        .execute(&mut *tx)
                        .await
                        .context("storing the report")?;
                }
            }
            tx.commit().await.context("storing the report")?;
            n
        });
        if inserted == 1 {
            return Ok(Inserted::New);
        }
        const STORED: &str = "SELECT report_sha256 FROM reports WHERE id = $1";
        let stored: Vec<u8> = on_pool!(self, pool => sqlx::query(STORED)
            .bind(r.id)
            .fetch_one(pool)
            .await
            .context("reading the stored report")?
            .try_get(0)?);
        Ok(if stored == r.report_sha256 { Inserted::Again } else { Inserted::Conflict })
    }

    /// Attaches a trace to a stored report, once: the same trace again is [`TracePut::Again`].
    pub async fn put_trace(&self, id: &str, received_at: i64, trace: &[u8]) -> anyhow::Result<TracePut> {
        const INSERT: &str = "INSERT INTO traces (report_id, received_at, trace_sha256, trace) \
             SELECT id, $2, $3, $4 FROM reports WHERE id = $1 ON CONFLICT (report_id) DO NOTHING";
        const STORED: &str = "SELECT trace_sha256 FROM traces WHERE report_id = $1";
        let digest = super::token::sha256(trace);
        let n = on_pool!(self, pool => sqlx::query(INSERT)
            .bind(id)
            .bind(received_at)
            .bind(&digest[..])
            .bind(trace)
            .execute(pool)
            .await
            .context("storing the trace")?
            .rows_affected());
        if n == 1 {
            return Ok(TracePut::New);
        }
        let stored: Option<Vec<u8>> = on_pool!(self, pool => sqlx::query(STORED)
            .bind(id)
            .fetch_optional(pool)
            .await
            .context("reading the stored trace")?
            .map(|row| row.try_get(0))
            .transpose()?);
        Ok(match stored {
            Some(d) if d[..] == digest[..] => TracePut::Again,
            Some(_) => TracePut::Conflict,
            None => TracePut::NoReport,
        })
    }

    pub async fn trace(&self, id: &str) -> anyhow::Result<Option<Vec<u8>>> {
        const GET: &str = "SELECT trace FROM traces WHERE report_id = $1";
        on_pool!(self, pool => {
            let row = sqlx::query(GET).bind(id).fetch_optional(pool).await.context("reading the trace")?;
            row.map(|r| Ok(r.try_get(0)?)).transpose()
        })
    }

    /// Removes the reports received before `before` (seconds since 1970), with their verdict
    /// rows and traces; how many.
    pub async fn remove_older_than(&self, before: i64) -> anyhow::Result<u64> {
        const DELETE: &str = "DELETE FROM reports WHERE received_at < $1";
        on_pool!(self, pool => Ok(sqlx::query(DELETE)
            .bind(before)
            .execute(pool)
            .await
            .context("removing old reports")?
            .rows_affected()))
    }

    /// The counts of the aggregate page, in SQL: the reports themselves are not read.
    pub async fn aggregate(&self) -> anyhow::Result<Aggregate> {
        const TOTALS: &str = "SELECT COUNT(*), COUNT(DISTINCT client_prefix), \
             COALESCE(SUM(CASE WHEN mptcp_usable THEN 1 ELSE 0 END), 0) FROM reports";
        const BY_VERDICT: &str =
            "SELECT verdict, COUNT(*) FROM report_verdicts GROUP BY verdict ORDER BY COUNT(*) DESC, verdict";
        const KINDS: &str = "SELECT network_kind, COUNT(*), SUM(CASE WHEN mptcp_usable THEN 1 ELSE 0 END) \
             FROM reports GROUP BY network_kind ORDER BY network_kind IS NULL, network_kind";
        const BY_KIND: &str =
            "SELECT network_kind, verdict, COUNT(*) FROM report_verdicts GROUP BY network_kind, verdict \
             ORDER BY COUNT(*) DESC, verdict";
        const DAYS: &str =
            "SELECT received_at / 86400 AS day, COUNT(*), SUM(CASE WHEN mptcp_usable THEN 1 ELSE 0 END) \
             FROM reports GROUP BY day ORDER BY day";
        const BY_DAY: &str =
            "SELECT received_day, verdict, COUNT(*) FROM report_verdicts GROUP BY received_day, verdict";
        // The counts at once, each on a connection of its own.
        on_pool!(self, pool => {
            let (t, by_verdict, kinds, by_kind, days, by_day) = tokio::try_join!(
                async { sqlx::query(TOTALS).fetch_one(pool).await.context("counting the reports") },
                async { sqlx::query(BY_VERDICT).fetch_all(pool).await.context("counting the verdicts") },
                async { sqlx::query(KINDS).fetch_all(pool).await.context("counting the network kinds") },
                async { sqlx::query(BY_KIND).fetch_all(pool).await.context("counting the verdicts by kind") },
                async { sqlx::query(DAYS).fetch_all(pool).await.context("counting the days") },
                async { sqlx::query(BY_DAY).fetch_all(pool).await.context("counting the verdicts by day") },
            )?;
            let mut a = Aggregate {
                reports: t.try_get(0)?,
                networks: t.try_get(1)?,
                usable: t.try_get(2)?,
                ..Default::default()
            };
            for row in by_verdict {
                a.by_verdict.push((row.try_get(0)?, row.try_get(1)?));
            }
            for row in kinds {
                a.kinds.push((row.try_get(0)?, row.try_get(1)?, row.try_get(2)?));
            }
            for row in by_kind {
                a.by_kind.push((row.try_get(0)?, row.try_get(1)?, row.try_get(2)?));
            }
            for row in days {
                a.days.push((row.try_get(0)?, row.try_get(1)?, row.try_get(2)?));
            }
            for row in by_day {
                a.by_day.push((row.try_get(0)?, row.try_get(1)?, row.try_get(2)?));
            }
            Ok(a)
        })
    }

    /// Every stored report as a row of the open data, oldest first.
    pub async fn paths(&self) -> anyhow::Result<Vec<PathRow>> {
        const ROWS: &str = "SELECT r.id, r.received_at / 86400, r.network_kind, r.mptcp_usable, v.verdict \
             FROM reports r LEFT JOIN report_verdicts v ON v.report_id = r.id \
             ORDER BY r.received_at, r.id, v.verdict";
        let mut out: Vec<PathRow> = Vec::new();
        let mut last: Option<String> = None;
        on_pool!(self, pool => {
            for row in sqlx::query(ROWS).fetch_all(pool).await.context("reading the reports")? {
                let id: String = row.try_get(0)?;
                if last.as_deref() != Some(id.as_str()) {
                    out.push(PathRow {
                        day: row.try_get(1)?,
                        network_kind: row.try_get(2)?,
                        mptcp_usable: row.try_get(3)?,
                        verdicts: Vec::new(),
                    });
                    last = Some(id);
                }
                if let (Some(p), Some(v)) = (out.last_mut(), row.try_get::<Option<String>, _>(4)?) {
                    p.verdicts.push(v);
                }
            }
        });
        Ok(out)
    }

    pub async fn get(&self, id: &str) -> anyhow::Result<Option<Stored>> {
        const GET: &str = "SELECT r.token_sha256, r.report, r.received_at, CAST(LENGTH(t.trace) AS BIGINT) \
             FROM reports r LEFT JOIN traces t ON t.report_id = r.id WHERE r.id = $1";
        on_pool!(self, pool => {
            let row = sqlx::query(GET).bind(id).fetch_optional(pool).await.context("reading the report")?;
            row.map(|r| {
                Ok(Stored {
                    token_sha256: r.try_get(0)?,
                    report: r.try_get(1)?,
                    received_at: r.try_get(2)?,
                    trace_bytes: r.try_get(3)?,
                })
            })
            .transpose()
        })
    }

    pub async fn count(&self) -> anyhow::Result<i64> {
        const COUNT: &str = "SELECT COUNT(*) FROM reports";
        on_pool!(self, pool => Ok(sqlx::query(COUNT).fetch_one(pool).await?.try_get(0)?))
    }

    pub async fn close(&self) {
        on_pool!(self, pool => pool.close().await)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A database made by the first version of the schema, with reports in it, brought up to
    /// date: its reports are counted by verdict and path condition. (The first migration alone
    /// is run through the Migrator's fields, which sqlx documents as semver-exempt: a test only.)
    #[tokio::test]
    async fn reports_stored_before_the_verdict_rows_are_counted_after_the_migration() {
        let dir = std::env::temp_dir().join(format!("mpp-migrate-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let url = format!("sqlite://{}", dir.join("r.db").display());
        let opts = SqliteConnectOptions::from_str(&url).unwrap().create_if_missing(true);
        let pool = SqlitePoolOptions::new().connect_with(opts).await.unwrap();
        let all = sqlx::migrate!("./migrations/sqlite");
        let first = sqlx::migrate::Migrator { migrations: all.migrations[..1].to_vec().into(), ..all };
        first.run(&pool).await.unwrap();
        let report =
            r#"{"summary":{"verdicts":["mptcp_ok","nat"],"path_conditions":["handshake_reordered"]}}"#;
        sqlx::query("INSERT INTO reports VALUES ('a', x'00', x'00', 172800, $1, 1, 'mptcp_ok,nat')")
            .bind(report)
            .execute(&pool)
            .await
            .unwrap();
        sqlx::query(
            "INSERT INTO reports VALUES ('b', x'00', x'00', 1, '{\"summary\":{\"verdicts\":[]}}', 0, '')",
        )
        .execute(&pool)
        .await
        .unwrap();
        pool.close().await;
        let store = Store::open(&url).await.unwrap();
        let a = store.aggregate().await.unwrap();
        assert_eq!(a.reports, 2);
        let mut by: Vec<_> = a.by_verdict.clone();
        by.sort();
        assert_eq!(
            by,
            [("handshake_reordered".to_string(), 1), ("mptcp_ok".to_string(), 1), ("nat".to_string(), 1)]
        );
        assert_eq!(a.by_day.iter().map(|(d, _, _)| *d).collect::<Vec<_>>(), [2, 2, 2], "the report's day");
        store.close().await;
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_password_never_shows() {
        assert_eq!(
            redacted("postgres://mpp:s3cret@db.example/reports"),
            "postgres://mpp:***@db.example/reports"
        );
        assert_eq!(redacted("postgres://mpp@db.example/reports"), "postgres://mpp@db.example/reports");
        assert_eq!(redacted("sqlite:///var/lib/x.db"), "sqlite:///var/lib/x.db");
    }
}
