-- A sequence's position: which of its actions a job runs. A sequence's
-- later steps carry it; a job queued by the alert itself (its first, or a
-- reopening after reopen_after) has none and starts the sequence anew,
-- meeting the cooldown and the failure count like any first step.
ALTER TABLE remediation_jobs ADD COLUMN position integer CHECK (position > 0);
