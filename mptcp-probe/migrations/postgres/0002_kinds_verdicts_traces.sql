-- The kind of network a report was made from (as its user said), and the client's network as
-- the operator keeps it (a truncated prefix, or nothing): never shown, only counted.
ALTER TABLE reports ADD COLUMN network_kind TEXT;
ALTER TABLE reports ADD COLUMN client_prefix TEXT;

-- One row a verdict or path condition of a report's summary: the aggregate page counts them,
-- by network kind and by day (the report's, copied here so that counting needs no join).
CREATE TABLE report_verdicts (
    report_id TEXT NOT NULL REFERENCES reports (id) ON DELETE CASCADE,
    verdict TEXT NOT NULL,
    network_kind TEXT,
    received_day BIGINT NOT NULL,
    PRIMARY KEY (report_id, verdict)
);

CREATE INDEX report_verdicts_verdict ON report_verdicts (verdict);

-- The reports stored before: their summary's verdicts and path conditions, from the report.
INSERT INTO report_verdicts (report_id, verdict, received_day)
SELECT r.id, v, r.received_at / 86400
FROM reports r,
     jsonb_array_elements_text(
         COALESCE(r.report::jsonb -> 'summary' -> 'verdicts', '[]'::jsonb)
         || COALESCE(r.report::jsonb -> 'summary' -> 'path_conditions', '[]'::jsonb)
     ) AS v
ON CONFLICT DO NOTHING;

-- The header-only pcapng trace of a report, when its submitter attached one.
CREATE TABLE traces (
    report_id TEXT PRIMARY KEY NOT NULL REFERENCES reports (id) ON DELETE CASCADE,
    received_at BIGINT NOT NULL,
    trace_sha256 BYTEA NOT NULL,
    trace BYTEA NOT NULL
);
