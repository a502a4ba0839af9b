-- The workers and kv tables were never written by the master: workers live in the fleet
-- (memory) and their history in telemetry_minutes.
DROP TABLE IF EXISTS workers;
DROP TABLE IF EXISTS kv;
