-- Time windows for continuous views (src/windows.c).

-- Hopping windows: one row for every window of length size, starting every
-- slide from the epoch (1970-01-01 00:00, UTC for timestamptz), that
-- contains ts -- the half-open ranges [k * slide, k * slide + size).  slide
-- must divide size.  A continuous view groups by window_start:
--   FROM s, LATERAL kappa.hop(s.ts, slide => '1 minute', size => '10 minutes') AS w
CREATE FUNCTION kappa.hop(ts timestamptz, slide interval, size interval,
                          OUT window_start timestamptz, OUT window_end timestamptz)
RETURNS SETOF record
AS 'MODULE_PATHNAME', 'kappa_hop'
LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE ROWS 10;

COMMENT ON FUNCTION kappa.hop(timestamptz, interval, interval) IS
  'the hopping windows (size, starting every slide from the epoch) that contain a time';

CREATE FUNCTION kappa.hop(ts timestamp, slide interval, size interval,
                          OUT window_start timestamp, OUT window_end timestamp)
RETURNS SETOF record
AS 'MODULE_PATHNAME', 'kappa_hop'
LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE ROWS 10;

COMMENT ON FUNCTION kappa.hop(timestamp, interval, interval) IS
  'the hopping windows (size, starting every slide from the epoch) that contain a time';
