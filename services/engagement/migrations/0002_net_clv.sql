-- CLV net of the cost to serve, from valuation's CustomerValueChanged (in
-- the currency of `clv_currency`): the base of treatments valued as a share
-- of it. NULL until valuation prices the customer's cost to serve.
ALTER TABLE customers
    ADD COLUMN net_clv_units bigint,
    ADD COLUMN net_clv_nanos integer;
