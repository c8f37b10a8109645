/*-------------------------------------------------------------------------
 *
 * stats.h
 *	  Cumulative statistics of streams and expectations, kept in shared
 *	  memory (stats.c).
 *
 *-------------------------------------------------------------------------
 */
#ifndef KAPPA_STATS_H
#define KAPPA_STATS_H

#include "datatype/timestamp.h"

extern void KappaStatsPreloadInit(void);
extern void KappaStatsCountStream(Oid streamRelid, uint64 nrows);
extern void KappaStatsCountExpectations(int n, const int32 * ids, uint64 checked,
										const uint64 *violating,
										TimestampTz lastViolation);
extern void KappaStatsForgetExpectation(int32 id);

#endif							/* KAPPA_STATS_H */
