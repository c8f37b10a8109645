/*-------------------------------------------------------------------------
 *
 * pg_kappa.h
 *	  Map of the pg_kappa module: the externs of each source file, grouped by
 *	  the file that defines them.
 *
 * pg_kappa turns PostgreSQL into the processing and serving layer of a
 * real-time pipeline.  Rows reach a *stream* (a foreign table of our own FDW)
 * by INSERT, COPY or a Kafka worker; every path ends in KappaBatchApply(),
 * which feeds the rows to every continuous view on the stream inside the
 * caller's transaction.  See docs/architecture.md.
 *
 *-------------------------------------------------------------------------
 */
#ifndef PG_KAPPA_H
#define PG_KAPPA_H

#include "postgres.h"

#include "access/tupdesc.h"
#include "executor/tuptable.h"
#include "nodes/execnodes.h"
#include "nodes/parsenodes.h"
#include "storage/lockdefs.h"
#include "utils/relcache.h"

#define KAPPA_SCHEMA		"kappa"
#define KAPPA_DATA_SCHEMA	"kappa_data"
#define KAPPA_SERVER_NAME	"kappa_streams"

/* in guc.c */
extern int	kappa_batch_size;
extern int	kappa_max_latency_ms;
extern int	kappa_stream_batch_memory_kb;
extern int	kappa_batch_bytes_kb;
extern double kappa_dead_letter_alert;
extern void KappaDefineGucs(void);

/* in pg_kappa.c */
extern bool kappa_loaded_via_preload;

/*
 * A batch of new rows for one stream.  The rows are heap tuples in the
 * stream's row type, allocated in 'cxt', which KappaBatchApply resets.  INSERT,
 * COPY and the Kafka worker all fill a KappaBatch and call KappaBatchApply.
 *
 * Views over the stream alone take the rows as they come ("pushed" views,
 * view_accum.c): every KAPPA_PUSH_CHUNK_ROWS rows the caller calls
 * KappaBatchPush, which runs each such view's code over the new rows as the
 * view's owner; rows nothing else needs are then forgotten.
 */
typedef struct KappaBatch
{
	Oid			streamRelid;
	TupleDesc	tupdesc;		/* the stream's row type (not owned) */
	MemoryContext cxt;			/* large rows; reset after each apply */
	HeapTuple  *rows;
	int			nrows;
	int			maxrows;
	int			pushedRows;		/* rows[0 .. pushedRows) are pushed */
	Size		bytes;			/* memory taken by the rows */
	/* blocks the rows are formed in, kept across applies */
	MemoryContext blockcxt;
	char	  **blocks;
	int			nblocks;
	int			maxblocks;
	int			curBlock;
	Size		blockUsed;
	/* deltas combined in memory until the end of a statement (view_accum.c) */
	List	   *accums;
	bool		anyPushed;		/* some view takes pushed rows */
	TupleTableSlot *pushSlot;	/* a row being pushed */
	MemoryContext parentcxt;
	/* checking rows against the stream's constraints, if it has any */
	ResultRelInfo *checkRelInfo;
	EState	   *checkEstate;
	/* the stream's views, held while the batch lives */
	struct KappaStreamInfo *info;
	bool		keepRows;		/* retention or a delta query needs the rows */
	uint64		rowsAdded;		/* rows added since the batch was created */
	uint64		rowsCounted;	/* of those, counted in the statistics */
} KappaBatch;

/* rows pushed into views at a time (one role switch per view per chunk) */
#define KAPPA_PUSH_CHUNK_ROWS 1024

/* in batch.c */
extern KappaBatch *KappaBatchCreate(Relation stream, MemoryContext parent);
extern void KappaBatchAdd(KappaBatch *batch, TupleTableSlot *slot);
extern void KappaBatchPush(KappaBatch *batch);
extern void KappaBatchApply(KappaBatch *batch);
extern void KappaBatchAccumulate(KappaBatch *batch);
extern void KappaBatchDestroy(KappaBatch *batch);
extern void KappaBatchInit(void);

/*
 * KappaBatchPushDue tells whether rows are waiting to be pushed into views
 * and enough of them have gathered for a KappaBatchPush.
 */
static inline bool
KappaBatchPushDue(KappaBatch *batch)
{
	return batch->anyPushed &&
		batch->nrows - batch->pushedRows >= KAPPA_PUSH_CHUNK_ROWS;
}
extern KappaBatch *KappaActiveBatch(Oid streamRelid);
extern KappaBatch *KappaSetActiveBatch(KappaBatch *batch);
extern AttrNumber *KappaRetainedColumnMap(TupleDesc stream, Relation backing);

/* in catalog.c */
typedef struct KappaViewInfo KappaViewInfo;

typedef struct KappaStreamInfo
{
	Oid			relid;			/* the stream (foreign table) */
	Oid			backingRelid;	/* heap of retained rows, or InvalidOid */
	bool		retained;
	List	   *views;			/* of KappaViewInfo *, in view-OID order */
	bool		valid;			/* false once invalidated */
	MemoryContext cxt;			/* holds this entry and its views */
} KappaStreamInfo;

extern bool KappaIsStream(Oid relid);
extern KappaStreamInfo *KappaGetStreamInfo(Oid relid);
extern Oid	KappaStreamBackingRelid(Oid relid);

/* One row of kappa.view_catalog. */
typedef struct KappaViewRow
{
	Oid			view;			/* the user-facing view */
	Oid			stream;
	Oid			mat;			/* materialization */
	Oid			def;			/* definition */
} KappaViewRow;

extern bool KappaFindView(const char *column, Oid relid, KappaViewRow *row);
extern void KappaReleaseStreamInfo(KappaStreamInfo *info);
extern void KappaInvalidateStream(Oid relid);
extern Oid	KappaStreamServerOid(bool missing_ok);
extern void KappaCatalogInit(void);
extern Relation KappaCatalogTable(const char *name);
extern AttrNumber KappaCatalogAttnum(Relation rel, const char *name);

/* in view_engine.c */
extern void KappaViewApplyBatch(KappaViewInfo *view, KappaBatch *batch);
extern KappaViewInfo *KappaViewInfoLoad(Oid viewRelid, Oid matRelid,
										Oid defRelid, MemoryContext parent);
extern void KappaViewInfoFree(KappaViewInfo *view);
extern void KappaViewLockRelations(KappaViewInfo *view);
typedef struct KappaViewAccum KappaViewAccum;
extern void KappaViewAccumulateBatch(KappaViewInfo *view, KappaBatch *batch,
									 KappaViewAccum *acc);
extern void KappaViewFlushAccum(KappaViewInfo *view, KappaViewAccum *acc);
extern void KappaViewPushRows(KappaViewInfo *view, KappaViewAccum *acc,
							  TupleTableSlot *slot, HeapTuple *rows, int nrows);
extern void KappaViewBackfill(KappaViewInfo *view, Oid streamRelid, bool retained);

/* in retention.c */
extern int64 KappaExpireRetainedRows(void);

/* in stream_fdw.c */
extern double kappa_planned_batch_rows;

/* in stream.c */
extern Oid	KappaLookupStream(const char *name, LOCKMODE lockmode);

/* in util.c (the rest in util.h) */
extern void KappaExecUtility(Node *stmt, const char *sourceText);

#endif							/* PG_KAPPA_H */
