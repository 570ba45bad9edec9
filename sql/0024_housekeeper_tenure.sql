-- The housekeeper is elected for a tenure it renews every round, not by a session advisory lock.
--
-- A worker frozen while it held the lock (SIGSTOP, `docker pause`, a hung process) kept its
-- session, and so the lock: the kernel still answers TCP keepalives for a stopped process. No
-- other worker could be elected, so no lease was rescued, no overdue job expired and no alert was
-- evaluated, for as long as it stayed frozen. A tenure ends when it is not renewed, whatever the
-- holder's session does: another worker takes over at its next round. A holder that wakes up
-- after losing it finds another name in the row and stands down; until then a round of two
-- housekeepers is harmless (rescue and expiry skip locked rows, alert evaluation takes its own
-- lock). A stopping worker ends its tenure, so another takes over at once. It also works behind a
-- transaction-mode pooler, where a session lock does not.

SET LOCAL ROLE switchyard_admin;

CREATE TABLE switchyard.housekeeper (
    singleton  boolean     PRIMARY KEY DEFAULT true CHECK (singleton),
    holder     text        NOT NULL,
    elected_at timestamptz NOT NULL DEFAULT now(),
    expires_at timestamptz NOT NULL
);
ALTER TABLE switchyard.housekeeper ENABLE ROW LEVEL SECURITY;

COMMENT ON TABLE switchyard.housekeeper IS
    'The worker that keeps house (rescue, expiry, partitions, alerts) until expires_at; renewed every round.';

-- Takes or renews the tenure; true when p_worker holds it for p_tenure_seconds from now. It is
-- taken when nobody holds it or the holder's tenure has run out.
CREATE FUNCTION switchyard.keep_house(p_worker text, p_tenure_seconds double precision) RETURNS boolean
    LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, switchyard, pg_temp AS $$
DECLARE
    held boolean;
BEGIN
    -- Another's tenure in force: answered by a read, so the workers that do not keep house (all
    -- but one, every round) neither lock the row nor use a transaction id.
    IF EXISTS (SELECT FROM switchyard.housekeeper h WHERE h.holder <> p_worker AND h.expires_at > now()) THEN
        RETURN false;
    END IF;
    INSERT INTO switchyard.housekeeper AS h (holder, elected_at, expires_at)
    VALUES (p_worker, now(), now() + make_interval(secs => p_tenure_seconds))
    ON CONFLICT (singleton) DO UPDATE
        SET holder = EXCLUDED.holder,
            elected_at = CASE WHEN h.holder = EXCLUDED.holder THEN h.elected_at ELSE now() END,
            expires_at = EXCLUDED.expires_at
        WHERE h.holder = EXCLUDED.holder OR h.expires_at <= now()
    RETURNING true INTO held;
    RETURN coalesce(held, false);
END $$;

-- Ends p_worker's tenure, if it holds it (a worker stopping): the next round of another takes over.
CREATE FUNCTION switchyard.stand_down(p_worker text) RETURNS void
    LANGUAGE sql SECURITY DEFINER SET search_path = pg_catalog, switchyard, pg_temp AS $$
    UPDATE switchyard.housekeeper SET expires_at = now() WHERE holder = p_worker
$$;

REVOKE ALL ON FUNCTION switchyard.keep_house(text, double precision) FROM PUBLIC;
REVOKE ALL ON FUNCTION switchyard.stand_down(text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION switchyard.keep_house(text, double precision) TO switchyard_worker;
GRANT EXECUTE ON FUNCTION switchyard.stand_down(text) TO switchyard_worker;
