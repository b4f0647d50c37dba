-- The valuation service's cost-to-serve features (CustomerValueChanged):
-- CLV net of the cost to serve, cost to serve and net profit over the 365
-- days before scoring (in the tenant's currency), and the profit decile
-- (1 = most profitable tenth .. 10). NULL until valuation prices the
-- customer.
ALTER TABLE features
    ADD COLUMN net_clv       numeric,
    ADD COLUMN cost_to_serve numeric,
    ADD COLUMN net_profit    numeric,
    ADD COLUMN profit_decile smallint;
