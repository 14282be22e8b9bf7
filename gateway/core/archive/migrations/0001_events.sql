-- 0001: the archive of every alert's final state, one row per event (source, event id, acceptance time),
-- partitioned by the month of acceptance (UTC); the erasure tombstones; the customer reference function.

-- What an erasure writes and what logs show instead of a customer id (gateway/erasure.py customer_ref): a
-- hash an auditor holding the id can recompute, never the id itself.
CREATE FUNCTION pushgw_customer_ref(customer_id text) RETURNS text
    LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE
    AS $$ SELECT left(encode(sha256(convert_to('pushgw-customer:' || customer_id, 'UTF8')), 'hex'), 16) $$;

CREATE TABLE archive_events (
    source          text        NOT NULL,  -- the sending system's key id
    event_id        text        NOT NULL,
    accepted_at     timestamptz NOT NULL,  -- when the gateway accepted it (Redis TIME), the partition key
    version         integer     NOT NULL,  -- the record's arch_v: each later state of the event has a higher one
    status          text        NOT NULL,  -- delivered, failed, dead_lettered, no_binding, suppressed
    attempts        integer     NOT NULL DEFAULT 0,
    last_error      text,
    updated_at      timestamptz,
    delivered_at    timestamptz,
    finish_status   text,                  -- WeChat's TEMPLATESENDJOBFINISH status
    finished_at     timestamptz,
    notice          text,                  -- the status notice to core banking (SMS fallback)
    notified_at     timestamptz,
    notice_error    text,
    notice_attempts integer,
    held            text,                  -- why it waited for a digest (rate_limit, quiet_hours)
    fallback        text,
    replayed_at     timestamptz,
    -- personal fields, NULL once the customer is erased (the same fields erase_records.lua drops in Redis);
    -- never the account number (its last 4 digits only), the openid or the counterparty
    customer_id     text,
    type            text,
    amount          numeric,
    currency        text,
    account_tail    text,
    occurred_at     text,                  -- as core banking sent it (ISO-8601 with its offset)
    priority        text,
    msgid           text,                  -- WeChat's message id
    erased_at       timestamptz,
    archived_at     timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (source, event_id, accepted_at)
) PARTITION BY RANGE (accepted_at);

-- the customer-service timeline: a customer's events, newest first
CREATE INDEX archive_events_customer ON archive_events (customer_id, accepted_at DESC)
    WHERE customer_id IS NOT NULL;

-- Erasures: rows of the customer accepted before `erased_at` that reach the archive later (the backlog in
-- Redis) are stored without their personal fields.
CREATE TABLE archive_erasures (
    customer_ref text        PRIMARY KEY,  -- pushgw_customer_ref(customer id)
    erased_at    timestamptz NOT NULL
);
