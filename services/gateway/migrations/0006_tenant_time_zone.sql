-- A tenant's time zone (an IANA name): the gateway forwards it with every
-- call, and services count the days of a request that names no zone of its
-- own in it (calibration windows given as dates, purchase days).
ALTER TABLE tenants ADD COLUMN time_zone text NOT NULL DEFAULT 'UTC';
