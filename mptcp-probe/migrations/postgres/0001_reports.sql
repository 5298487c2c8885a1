-- Reports as uploaded, whole. The token is never stored: its SHA-256 is.
CREATE TABLE reports (
    id TEXT PRIMARY KEY NOT NULL,
    token_sha256 BYTEA NOT NULL,
    -- SHA-256 of the report as stored: a second upload of the same id must be this report.
    report_sha256 BYTEA NOT NULL,
    received_at BIGINT NOT NULL,
    report TEXT NOT NULL,
    mptcp_usable BOOLEAN NOT NULL,
    -- The summary's verdicts, comma-separated, for the aggregate without parsing every report.
    verdicts TEXT NOT NULL
);

CREATE INDEX reports_received_at ON reports (received_at);
