-- Which model version served an application at an instant; windows are half-open [start, end).
-- Parameters: app, env, at:instant
-- `at` is ISO 8601 with Z or an offset, not in the future. Example:
--   govern audit run production_at --param app=scoring --param env=production --param at=2026-03-01T09:00:00Z
SELECT app, env, model, version, started_at, ended_at, deployed_by, start_seq, end_seq
FROM production_windows
WHERE app = $app
  AND env = $env
  AND started_at <= $at::TIMESTAMPTZ::TIMESTAMP
  AND (ended_at IS NULL OR $at::TIMESTAMPTZ::TIMESTAMP < ended_at);
