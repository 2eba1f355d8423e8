-- Actions that act on more than their target (a gateway's dependents, a
-- compose project's services) record each container they touched as its
-- own recovery_actions row under the same job, pointing at the job's action.
-- The job's own action stays unique per job.
ALTER TABLE recovery_actions
    ADD COLUMN parent_action_id bigint REFERENCES recovery_actions (id) ON DELETE CASCADE;
DROP INDEX recovery_actions_job_idx;
CREATE UNIQUE INDEX recovery_actions_job_idx ON recovery_actions (job_id)
    WHERE job_id IS NOT NULL AND parent_action_id IS NULL;
CREATE INDEX recovery_actions_parent_idx ON recovery_actions (parent_action_id)
    WHERE parent_action_id IS NOT NULL;
-- Every action of a job, its own and the containers it touched, by job:
-- the partial unique index above cannot serve a lookup that does not say
-- parent_action_id IS NULL.
CREATE INDEX recovery_actions_job_all_idx ON recovery_actions (job_id) WHERE job_id IS NOT NULL;
