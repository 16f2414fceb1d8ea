-- Every promotion of a model: who moved which version where, who approved it, why, and whether it was forced.
-- Parameters: model
SELECT promoted_at, version, from_stage, to_stage, actor, approver, reason, forced, gto_tag, seq
FROM promotions
WHERE model = $model
ORDER BY seq;
