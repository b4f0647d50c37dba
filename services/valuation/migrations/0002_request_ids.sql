-- FitModel's request ids move to the kit's request_ids table (one mechanism
-- for every service), scope 'FitModel'.
INSERT INTO request_ids (tenant_id, scope, request_id, fingerprint, result_id, create_time)
SELECT tenant_id, 'FitModel', request_id, request_hash, model_id, create_time FROM fit_requests;
DROP TABLE fit_requests;
