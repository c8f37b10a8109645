/*-------------------------------------------------------------------------
 *
 * kappa_errcodes.h
 *	  SQLSTATEs of pg_kappa's own conditions, all in class KV ("kappa view").
 *
 * Each construct that a continuous view refuses has its own code so that
 * clients and tests can tell the refusals apart.  Conditions that PostgreSQL
 * already names (a relation that does not exist, a duplicate name, missing
 * privileges) use PostgreSQL's codes.
 *
 *-------------------------------------------------------------------------
 */
#ifndef KAPPA_ERRCODES_H
#define KAPPA_ERRCODES_H

#include "utils/elog.h"

#define ERRCODE_KAPPA_DISTINCT_AGGREGATE		MAKE_SQLSTATE('K','V','0','0','1')
#define ERRCODE_KAPPA_ORDERED_SET_AGGREGATE		MAKE_SQLSTATE('K','V','0','0','2')
#define ERRCODE_KAPPA_NO_COMBINE_FUNCTION		MAKE_SQLSTATE('K','V','0','0','3')
#define ERRCODE_KAPPA_WINDOW_FUNCTION			MAKE_SQLSTATE('K','V','0','0','4')
#define ERRCODE_KAPPA_VOLATILE_FUNCTION			MAKE_SQLSTATE('K','V','0','0','5')
#define ERRCODE_KAPPA_MULTIPLE_STREAMS			MAKE_SQLSTATE('K','V','0','0','6')
#define ERRCODE_KAPPA_NOT_AGGREGATE				MAKE_SQLSTATE('K','V','0','0','7')
#define ERRCODE_KAPPA_SUBQUERY_STREAM			MAKE_SQLSTATE('K','V','0','0','8')
#define ERRCODE_KAPPA_SET_OPERATION				MAKE_SQLSTATE('K','V','0','0','9')
#define ERRCODE_KAPPA_NO_STREAM					MAKE_SQLSTATE('K','V','0','1','0')
#define ERRCODE_KAPPA_OUTER_JOIN_STREAM			MAKE_SQLSTATE('K','V','0','1','1')
#define ERRCODE_KAPPA_GROUPING_SETS				MAKE_SQLSTATE('K','V','0','1','2')
#define ERRCODE_KAPPA_SET_RETURNING				MAKE_SQLSTATE('K','V','0','1','3')
#define ERRCODE_KAPPA_SELECT_DISTINCT			MAKE_SQLSTATE('K','V','0','1','4')
#define ERRCODE_KAPPA_LOCKING_CLAUSE			MAKE_SQLSTATE('K','V','0','1','5')
#define ERRCODE_KAPPA_OUTER_AGGREGATE			MAKE_SQLSTATE('K','V','0','1','6')
#define ERRCODE_KAPPA_ORDERED_AGGREGATE			MAKE_SQLSTATE('K','V','0','1','7')
#define ERRCODE_KAPPA_SUBQUERY_OUTPUT			MAKE_SQLSTATE('K','V','0','1','8')
#define ERRCODE_KAPPA_NONCONSTANT_LIMIT			MAKE_SQLSTATE('K','V','0','1','9')
#define ERRCODE_KAPPA_UNORDERED_KEY				MAKE_SQLSTATE('K','V','0','2','0')
#define ERRCODE_KAPPA_UNGROUPED_COLUMN			MAKE_SQLSTATE('K','V','0','2','1')
#define ERRCODE_KAPPA_NOT_SELECT				MAKE_SQLSTATE('K','V','0','2','2')
#define ERRCODE_KAPPA_NO_STREAM_ROWS			MAKE_SQLSTATE('K','V','0','2','3')
#define ERRCODE_KAPPA_TABLE_VIEW_CONSTRUCT		MAKE_SQLSTATE('K','V','0','2','4')
#define ERRCODE_KAPPA_UNSUPPORTED_RELATION		MAKE_SQLSTATE('K','V','0','2','5')
/*
 * A row violated an expectation whose action is 'fail' while a Kafka source
 * applied it: not the message's fault, so the source stops (SQL writers get
 * check_violation, 23514, instead).
 */
#define ERRCODE_KAPPA_EXPECTATION_FAILED		MAKE_SQLSTATE('K','V','0','2','6')
/* a rebuild of a view cannot be completed: it stays failed until cancelled */
#define ERRCODE_KAPPA_REBUILD_FAILED			MAKE_SQLSTATE('K','V','0','2','7')

#endif							/* KAPPA_ERRCODES_H */
