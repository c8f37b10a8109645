/*-------------------------------------------------------------------------
 *
 * windows.c
 *	  Time windows for continuous views: kappa.hop(), the hopping windows
 *	  that contain a time.
 *
 * kappa.hop(ts, slide, size) returns one row (window_start, window_end) for
 * every window of length 'size' that contains 'ts', windows starting every
 * 'slide': the half-open ranges [k * slide, k * slide + size) counted from
 * the epoch (1970-01-01 00:00 UTC for timestamptz, 1970-01-01 00:00 for
 * timestamp), the same grid as date_bin(slide, ts, epoch) gives tumbling
 * windows on.  'slide' must divide 'size'; so each time is in size / slide
 * windows, returned from the earliest.  It is an ordinary set-returning
 * function: a continuous view groups by its window_start (FROM s, LATERAL
 * kappa.hop(s.ts, ...) AS w), and the same query runs as plain SQL.  A NULL
 * argument gives no window (the function is strict), as a NULL time falls
 * in no window, and so does an infinite time.
 *
 * As date_bin, a width is a fixed length: an interval with months or years
 * is refused, and a day counts 24 hours.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "common/int.h"
#include "datatype/timestamp.h"
#include "fmgr.h"
#include "funcapi.h"
#include "utils/builtins.h"
#include "utils/datetime.h"
#include "utils/timestamp.h"

PG_FUNCTION_INFO_V1(kappa_hop);

/* the windows of one call, as the calls that return them go on */
typedef struct HopState
{
	int64		next_start;		/* of the next window to return */
	int64		size;			/* microseconds */
	int64		slide;
	int64		windows_left;
}			HopState;

/* An interval of fixed length in microseconds, > 0; 'what' names it. */
static int64
hop_width(Interval *iv, const char *what)
{
	int64		usecs;

	if (iv->month != 0)
		ereport(ERROR,
				(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
				 errmsg("the %s of a hopping window cannot contain months or years", what),
				 errhint("Use days, hours, minutes or seconds (a day counts 24 hours).")));
	if (pg_mul_s64_overflow((int64) iv->day, USECS_PER_DAY, &usecs) ||
		pg_add_s64_overflow(usecs, iv->time, &usecs))
		ereport(ERROR,
				(errcode(ERRCODE_DATETIME_VALUE_OUT_OF_RANGE),
				 errmsg("the %s of a hopping window is out of range", what)));
	if (usecs <= 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("the %s of a hopping window must be positive", what)));
	return usecs;
}

/*
 * kappa.hop(ts, slide, size) returns the windows that contain ts (see the
 * file header); the same C function serves timestamptz and timestamp, whose
 * values count microseconds from their epochs alike.
 */
Datum
kappa_hop(PG_FUNCTION_ARGS)
{
	FuncCallContext *funcctx;
	HopState   *st;

	if (SRF_IS_FIRSTCALL())
	{
		MemoryContext oldcxt;
		Timestamp	ts = PG_GETARG_TIMESTAMP(0);
		int64		slide = hop_width(PG_GETARG_INTERVAL_P(1), "slide");
		int64		size = hop_width(PG_GETARG_INTERVAL_P(2), "size");
		TupleDesc	desc;
		int64		epoch_offset;
		int64		offset;
		int64		last_start;
		int64		first = 0;
		int64		last_end;

		if (size % slide != 0)
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("the slide of a hopping window must divide its size"),
					 errdetail("The size is not a whole number of slides."),
					 errhint("Choose a slide such as size / 2, size / 10 or size / 60.")));

		funcctx = SRF_FIRSTCALL_INIT();
		oldcxt = MemoryContextSwitchTo(funcctx->multi_call_memory_ctx);
		if (get_call_result_type(fcinfo, NULL, &desc) != TYPEFUNC_COMPOSITE)
			elog(ERROR, "kappa.hop must return a composite type");
		funcctx->tuple_desc = BlessTupleDesc(desc);
		st = palloc0(sizeof(HopState));
		funcctx->user_fctx = st;
		MemoryContextSwitchTo(oldcxt);

		/* an infinite time is in no window */
		if (!TIMESTAMP_NOT_FINITE(ts))
		{
			/*
			 * the start of the last window that contains ts: ts less its
			 * offset from the slides' grid, which starts at the Unix epoch
			 * (ts counts from 2000-01-01)
			 */
			epoch_offset = (int64) (POSTGRES_EPOCH_JDATE - UNIX_EPOCH_JDATE) * USECS_PER_DAY;
			offset = ts % slide;
			if (offset < 0)
				offset += slide;
			offset = (offset + epoch_offset % slide) % slide;
			last_start = ts - offset;
			/* the first: size / slide - 1 slides before */
			if (pg_sub_s64_overflow(last_start, size - slide, &first) ||
				pg_add_s64_overflow(last_start, size, &last_end) ||
				!IS_VALID_TIMESTAMP(first) || !IS_VALID_TIMESTAMP(last_end))
				ereport(ERROR,
						(errcode(ERRCODE_DATETIME_VALUE_OUT_OF_RANGE),
						 errmsg("timestamp out of range"),
						 errdetail("A hopping window of %s would reach past the range of timestamps.",
								   DatumGetCString(DirectFunctionCall1(interval_out,
																	   PG_GETARG_DATUM(2))))));
			st->windows_left = size / slide;
		}
		st->next_start = first;
		st->size = size;
		st->slide = slide;
	}

	funcctx = SRF_PERCALL_SETUP();
	st = funcctx->user_fctx;
	if (st->windows_left > 0)
	{
		Datum		values[2];
		bool		nulls[2] = {false, false};
		HeapTuple	tuple;

		values[0] = TimestampGetDatum(st->next_start);
		values[1] = TimestampGetDatum(st->next_start + st->size);
		tuple = heap_form_tuple(funcctx->tuple_desc, values, nulls);
		st->next_start += st->slide;
		st->windows_left--;
		SRF_RETURN_NEXT(funcctx, HeapTupleGetDatum(tuple));
	}
	SRF_RETURN_DONE(funcctx);
}
