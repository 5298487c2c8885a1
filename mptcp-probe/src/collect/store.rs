//! Where the collector keeps reports: SQLite (WAL; migrations in `migrations/sqlite`, applied
//! at start). A report is one row, written in one statement: stored whole or not at all.

use std::{str::FromStr as _, time::Duration};

use anyhow::Context as _;
use sqlx::{
    sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous},
    Row as _, SqlitePool,
};

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
pub struct Store {
    pool: SqlitePool,
}

impl Store {
    /// Opens the database named by `url` (`sqlite://PATH`, created when missing) and brings its
    /// schema up to date.
    pub async fn open(url: &str) -> anyhow::Result<Self> {
        let Some(path) = url.strip_prefix("sqlite://") else {
            anyhow::bail!(
                "--db {url:?}: this collector stores its reports in SQLite; give sqlite://PATH \
                 (PostgreSQL is not supported yet)"
            );
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
        Ok(Self { pool })
    }

    /// Stores a report unless its id is taken; says which.
    pub async fn insert(&self, r: &NewReport<'_>) -> anyhow::Result<Inserted> {
        let done = sqlx::query(
            "INSERT INTO reports (id, token_sha256, report_sha256, received_at, report, mptcp_usable, verdicts) \
             VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (id) DO NOTHING",
        )
        .bind(r.id)
        .bind(r.token_sha256)
        .bind(r.report_sha256)
        .bind(r.received_at)
        .bind(r.report)
        .bind(r.mptcp_usable)
        .bind(r.verdicts)
        .execute(&self.pool)
        .await
        .context("storing the report")?;
        if done.rows_affected() == 1 {
            return Ok(Inserted::New);
        }
        let row = sqlx::query("SELECT report_sha256 FROM reports WHERE id = $1")
            .bind(r.id)
            .fetch_one(&self.pool)
            .await
            .context("reading the stored report")?;
        let stored: Vec<u8> = row.try_get(0)?;
        Ok(if stored == r.report_sha256 { Inserted::Again } else { Inserted::Conflict })
    }

    pub async fn get(&self, id: &str) -> anyhow::Result<Option<Stored>> {
        let row = sqlx::query("SELECT token_sha256, report FROM reports WHERE id = $1")
            .bind(id)
            .fetch_optional(&self.pool)
            .await
            .context("reading the report")?;
        row.map(|r| Ok(Stored { token_sha256: r.try_get(0)?, report: r.try_get(1)? })).transpose()
    }

    pub async fn count(&self) -> anyhow::Result<i64> {
        let row = sqlx::query("SELECT COUNT(*) FROM reports").fetch_one(&self.pool).await?;
        Ok(row.try_get(0)?)
    }

    pub async fn close(&self) {
        self.pool.close().await;
    }
}
