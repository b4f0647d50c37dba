-- CreateSegment's request ids move to the kit's request_ids table (one
-- mechanism for every service), scope 'CreateSegment'.
INSERT INTO request_ids (tenant_id, scope, request_id, fingerprint, result_id, create_time)
SELECT tenant_id, 'CreateSegment', request_id, fingerprint, segment_id, create_time FROM request_keys;
DROP TABLE request_keys;
