/*-------------------------------------------------------------------------
 *
 * stats.h
 *	  Cumulative statistics of streams, kept in shared memory (stats.c).
 *
 *-------------------------------------------------------------------------
 */
#ifndef KAPPA_STATS_H
#define KAPPA_STATS_H

extern void KappaStatsPreloadInit(void);
extern void KappaStatsCountStream(Oid streamRelid, uint64 nrows);

#endif							/* KAPPA_STATS_H */
