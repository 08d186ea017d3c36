-- Idempotent: pgdr init runs every migration on each call.
ALTER DATABASE demo SET timezone TO 'UTC';
