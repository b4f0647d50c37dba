-- Request ids of profile writes move to the kit's request_ids table (one
-- mechanism for every service): the method becomes the scope, the stored
-- answer and the customers it names travel with it.
INSERT INTO request_ids (tenant_id, scope, request_id, fingerprint, result, subject_ids, create_time)
SELECT tenant_id, method, request_id, fingerprint, result, customer_ids, create_time FROM idempotency_keys;
DROP TABLE idempotency_keys;
-- An erasure forgets every answer that names the erased customers.
CREATE INDEX request_ids_subjects ON request_ids USING gin (tenant_id, subject_ids);
