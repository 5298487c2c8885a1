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
    pub verdicts: &'a str,
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

    /// Stores a report unless its id is taken; says which.
    pub async fn insert(&self, r: &NewReport<'_>) -> anyhow::Result<Inserted> {
        const INSERT: &str = "INSERT INTO reports \
             (id, token_sha256, report_sha256, received_at, report, mptcp_usable, verdicts) \
             VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (id) DO NOTHING";
        let inserted = on_pool!(self, pool => sqlx::query(INSERT)
            .bind(r.id)
            .bind(r.token_sha256)
            .bind(r.report_sha256)
            .bind(r.received_at)
            .bind(r.report)
            .bind(r.mptcp_usable)
            .bind(r.verdicts)
            .execute(pool)
            .await
            .context("storing the report")?
            .rows_affected());
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

    pub async fn get(&self, id: &str) -> anyhow::Result<Option<Stored>> {
        const GET: &str = "SELECT token_sha256, report FROM reports WHERE id = $1";
        on_pool!(self, pool => {
            let row = sqlx::query(GET).bind(id).fetch_optional(pool).await.context("reading the report")?;
            row.map(|r| Ok(Stored { token_sha256: r.try_get(0)?, report: r.try_get(1)? })).transpose()
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
