-- The lineage of one model version: its training, git commit, and every dataset with its extraction date.
-- Parameters: model, version
SELECT
    mv.model,
    mv.version,
    t.seq AS training_seq,
    t.git_commit,
    t.actor AS trained_by,
    t.occurred_at AS trained_at,
    d.value->>'path' AS dataset,
    d.value->>'role' AS role,
    d.value->>'md5' AS md5,
    d.value->>'sha256' AS sha256,
    (d.value->>'rows')::BIGINT AS rows,
    d.value->>'extracted_at' AS extracted_at
FROM model_versions AS mv
JOIN events AS t ON t.event_id = mv.training_event_id,
     json_each(t.payload, '$.datasets') AS d
WHERE mv.model = $model AND mv.version = $version
ORDER BY dataset;
