/*-------------------------------------------------------------------------
 *
 * guc.c
 *	  Every kappa.* setting, defined in one place.
 *
 * kappa.batch_size and kappa.max_latency are the latency/cost knob: a batch
 * ends when either bound is reached (or kappa.batch_bytes, which bounds a
 * worker's memory).  Kafka sources may override them with per-source
 * options.  kappa.dead_letter_alert is the share of dead letters over the
 * last minute above which kappa.sources shows a source as degraded.  kappa.stream_batch_memory bounds the memory an INSERT
 * or COPY into a stream fills with rows before applying them to the views,
 * which bounds memory for statements of any size.
 * kappa.expectation_errors makes an INSERT, UPDATE or COPY fail with
 * check_violation on a row that violates a 'dead_letter' expectation,
 * instead of skipping the row (docs/contracts.md).
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "utils/guc.h"

#include "pg_kappa.h"

int			kappa_batch_size = 100000;
int			kappa_max_latency_ms = 100;
int			kappa_stream_batch_memory_kb = 65536;
int			kappa_batch_bytes_kb = 65536;
double		kappa_dead_letter_alert = 0.5;
bool		kappa_expectation_errors = false;

/*
 * KappaDefineGucs registers the kappa.* settings and reserves the prefix.
 * Called once from _PG_init.
 */
void
KappaDefineGucs(void)
{
	DefineCustomIntVariable("kappa.batch_size",
							"Maximum number of Kafka messages applied in one batch.",
							"A batch ends when it holds this many messages or when "
							"kappa.max_latency has passed, whichever comes first.",
							&kappa_batch_size,
							100000, 1, 1000000,
							PGC_SIGHUP, 0,
							NULL, NULL, NULL);

	DefineCustomIntVariable("kappa.max_latency",
							"Longest time a Kafka message waits before its batch is applied.",
							"Lower values make views fresher at a higher cost per message.",
							&kappa_max_latency_ms,
							100, 1, 3600 * 1000,
							PGC_SIGHUP, GUC_UNIT_MS,
							NULL, NULL, NULL);

	DefineCustomIntVariable("kappa.stream_batch_memory",
							"Memory an INSERT or COPY into a stream fills with rows before applying them to its views.",
							"Larger batches merge each group into a view less often.",
							&kappa_stream_batch_memory_kb,
							65536, 64, MAX_KILOBYTES,
							PGC_USERSET, GUC_UNIT_KB,
							NULL, NULL, NULL);

	DefineCustomIntVariable("kappa.batch_bytes",
							"Maximum bytes of Kafka messages applied in one batch.",
							"A batch also ends when its messages reach this size, so that "
							"large messages cannot grow a worker without bound.",
							&kappa_batch_bytes_kb,
							65536, 64, MAX_KILOBYTES,
							PGC_SIGHUP, GUC_UNIT_KB,
							NULL, NULL, NULL);

	DefineCustomRealVariable("kappa.dead_letter_alert",
							 "Share of dead letters over the last minute above which a Kafka source is degraded.",
							 "kappa.sources shows such a source with state degraded and the reason in last_error.",
							 &kappa_dead_letter_alert,
							 0.5, 0.0, 1.0,
							 PGC_SIGHUP, 0,
							 NULL, NULL, NULL);

	DefineCustomBoolVariable("kappa.expectation_errors",
							 "Raise an error for rows that violate a 'dead_letter' expectation instead of skipping them.",
							 "Applies to INSERT, UPDATE and COPY; Kafka sources always send such rows to kappa.errors.",
							 &kappa_expectation_errors,
							 false,
							 PGC_USERSET, 0,
							 NULL, NULL, NULL);

	MarkGUCPrefixReserved("kappa");
}
