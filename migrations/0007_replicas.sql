-- Replicas that share the database: each engine says who it is, which
-- configuration it runs (a fingerprint) and when it was last alive, so that
-- replicas whose remediations differ can be seen (selfheal_replicas).
CREATE TABLE replicas (
    id                 text        PRIMARY KEY,  -- host/pid/start time
    host               text        NOT NULL,
    version            text        NOT NULL DEFAULT '',
    config_fingerprint text        NOT NULL,
    remediations       text[]      NOT NULL DEFAULT '{}',
    started_at         timestamptz NOT NULL DEFAULT now(),
    last_seen          timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX replicas_last_seen_idx ON replicas (last_seen DESC);
