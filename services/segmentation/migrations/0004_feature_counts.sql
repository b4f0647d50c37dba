-- How many of a tenant's customers have a CLV and a monetary value: the
-- size of the "top P %" that classification compares against. Counting them
-- at each batch read the tenant's whole index (about 140 ms per batch at
-- 100,000 customers, and linear in the base); these counts are kept by
-- statement triggers instead, from the rows each statement changed.
CREATE TABLE feature_counts (
    tenant_id  uuid   PRIMARY KEY,
    clv_n      bigint NOT NULL DEFAULT 0,
    monetary_n bigint NOT NULL DEFAULT 0
);

INSERT INTO feature_counts (tenant_id, clv_n, monetary_n)
SELECT tenant_id, count(clv), count(monetary) FROM features GROUP BY tenant_id;

-- Adds each statement's changes to the counts, per tenant; a statement that
-- changed no count (most updates: ladder, stage, RFM, recency) touches no
-- counts row.
CREATE FUNCTION feature_counts_changed() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN
        INSERT INTO feature_counts AS f (tenant_id, clv_n, monetary_n)
        SELECT * FROM (SELECT tenant_id, count(clv) AS c, count(monetary) AS m
                         FROM new_rows GROUP BY tenant_id) d
         WHERE c <> 0 OR m <> 0 ORDER BY tenant_id
        ON CONFLICT (tenant_id) DO UPDATE
           SET clv_n = f.clv_n + EXCLUDED.clv_n, monetary_n = f.monetary_n + EXCLUDED.monetary_n;
    ELSIF TG_OP = 'DELETE' THEN
        INSERT INTO feature_counts AS f (tenant_id, clv_n, monetary_n)
        SELECT * FROM (SELECT tenant_id, -count(clv) AS c, -count(monetary) AS m
                         FROM old_rows GROUP BY tenant_id) d
         WHERE c <> 0 OR m <> 0 ORDER BY tenant_id
        ON CONFLICT (tenant_id) DO UPDATE
           SET clv_n = f.clv_n + EXCLUDED.clv_n, monetary_n = f.monetary_n + EXCLUDED.monetary_n;
    ELSE
        INSERT INTO feature_counts AS f (tenant_id, clv_n, monetary_n)
        SELECT * FROM (SELECT tenant_id, sum(c)::bigint AS c, sum(m)::bigint AS m
                         FROM (SELECT tenant_id, count(clv) AS c, count(monetary) AS m
                                 FROM new_rows GROUP BY tenant_id
                               UNION ALL
                               SELECT tenant_id, -count(clv), -count(monetary)
                                 FROM old_rows GROUP BY tenant_id) u
                        GROUP BY tenant_id) d
         WHERE c <> 0 OR m <> 0 ORDER BY tenant_id
        ON CONFLICT (tenant_id) DO UPDATE
           SET clv_n = f.clv_n + EXCLUDED.clv_n, monetary_n = f.monetary_n + EXCLUDED.monetary_n;
    END IF;
    RETURN NULL;
END $$;

CREATE TRIGGER feature_counts_inserted AFTER INSERT ON features
    REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION feature_counts_changed();
CREATE TRIGGER feature_counts_updated AFTER UPDATE ON features
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION feature_counts_changed();
CREATE TRIGGER feature_counts_deleted AFTER DELETE ON features
    REFERENCING OLD TABLE AS old_rows
    FOR EACH STATEMENT EXECUTE FUNCTION feature_counts_changed();
