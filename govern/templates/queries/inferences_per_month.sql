-- Recorded inference: batches and rows per application, model version and month.
-- Parameters: none
SELECT app, env, model, version, date_trunc('month', occurred_at) AS month, count(*) AS batches, sum(rows) AS rows
FROM inferences
GROUP BY ALL
ORDER BY month, app, model, version;
