/*-------------------------------------------------------------------------
 *
 * pg_kappa.h
 *	  Map of the pg_kappa module: its layers, and the externs of the stream
 *	  and view engine grouped by the file that defines them.
 *
 * pg_kappa turns PostgreSQL into the processing and serving layer of a
 * real-time pipeline.  Rows reach a *stream* (a foreign table of our own FDW)
 * by INSERT, COPY or a Kafka worker; every path ends in KappaBatchApply(),
 * which feeds the rows to every continuous view on the stream inside the
 * caller's transaction.  See docs/architecture.md.
 *
 * Calls between files go one way, down these layers (tools/call_edges.pl
 * checks it against the table in docs/architecture.md):
 *
 *	 1. entry points: pg_kappa.c (_PG_init), stream.c (create/drop stream),
 *		stream_fdw.c (INSERT/COPY into a stream), view_define.c (create/drop
 *		view), protect.c (the materializations' guards), kafka_source.c (the
 *		sources' SQL functions), launcher.c, kafka_worker.c (a worker's loop)
 *	 2. Kafka worker parts: kafka_consumer.c, kafka_apply.c, kafka_status.c
 *		(kafka.h)
 *	 3. batch: batch.c (rows and retained storage), retention.c,
 *		table_capture.c (changes of tables that views aggregate)
 *	 4. view runtime: view_apply.c (how each view takes rows; backfill),
 *		stream_views.c (the per-backend cache of a stream's views)
 *	 5. view machinery: view_plan.c (loading and planning a view),
 *		view_merge.c (merging into a materialization), view_accum.c
 *		(combining deltas in memory)
 *	 6. leaves: view_shape.c, agg_state.c, stream_scan.c, the decoders
 *		(decode*.c), kafka_options.c, contracts.c (expectations: checking
 *		rows, add/drop_expectation)
 *	 7. foundation: catalog.c, util.c (util.h), guc.c, stats.c (stats.h)
 *
 * A lower layer calls a higher one only through a callback it is handed (a
 * DestReceiver, the FDW's callbacks).
 *
 *-------------------------------------------------------------------------
 */
#ifndef PG_KAPPA_H
#define PG_KAPPA_H

#include "postgres.h"

#include "access/htup.h"
#include "access/tupdesc.h"
#include "executor/tuptable.h"
#include "foreign/fdwapi.h"
#include "nodes/execnodes.h"
#include "nodes/parsenodes.h"
#include "storage/lockdefs.h"
#include "utils/relcache.h"
#include "utils/snapshot.h"

#define KAPPA_SCHEMA		"kappa"
#define KAPPA_DATA_SCHEMA	"kappa_data"
#define KAPPA_SERVER_NAME	"kappa_streams"

/* in pg_kappa.c */
extern bool kappa_loaded_via_preload;

/* ---------------------------------------------------------------- layer 3 */

typedef struct KappaStreamViews KappaStreamViews;
typedef struct KappaViewFeed KappaViewFeed;
typedef struct KappaContractRun KappaContractRun;
typedef struct KappaScanCut KappaScanCut;

/*
 * A batch of new rows for one stream.  The rows are heap tuples in the
 * stream's row type, formed in blocks the batch keeps across applies.
 * INSERT, COPY and the Kafka worker all fill a KappaBatch and call
 * KappaBatchApply.
 *
 * Views over the stream alone take the rows as they come ("pushed" views,
 * view_apply.c): every KAPPA_PUSH_CHUNK_ROWS rows the caller calls
 * KappaBatchPush, which runs each such view's code over the new rows as the
 * view's owner; rows nothing else needs are then forgotten.
 */
typedef struct KappaBatch
{
	Oid			streamRelid;
	TupleDesc	tupdesc;		/* the stream's row type */
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
	/* checking rows against the stream's constraints, if it has any */
	ResultRelInfo *checkRelInfo;
	EState	   *checkEstate;
	/* the stream's views, held while the batch lives, and how they take rows */
	KappaStreamViews *views;
	KappaViewFeed *feed;
	bool		pushesRows;		/* some view takes pushed rows */
	bool		keepRows;		/* retention or a delta query needs the rows */
	uint64		rowsAdded;		/* rows added since the batch was created */
	uint64		rowsCounted;	/* of those, counted in the statistics */
	KappaContractRun *contract; /* the stream's expectations, or NULL */
	Oid			onlyMat;		/* a rebuild's replay: feed only the building
								 * version with this materialization, keep no
								 * rows, count nothing; else InvalidOid */
} KappaBatch;

/* rows pushed into views at a time (one role switch per view per chunk) */
#define KAPPA_PUSH_CHUNK_ROWS 1024

/* in batch.c */
extern KappaBatch *KappaBatchCreate(Relation stream, MemoryContext parent);
extern KappaBatch *KappaBatchCreateForRebuild(Relation stream, Oid buildingMat,
											  MemoryContext parent);
extern void KappaBatchAdd(KappaBatch *batch, TupleTableSlot *slot);
extern void KappaBatchPush(KappaBatch *batch);
extern void KappaBatchAccumulate(KappaBatch *batch);
extern void KappaBatchApply(KappaBatch *batch);
extern bool KappaBatchPending(KappaBatch *batch);
extern void KappaBatchDestroy(KappaBatch *batch);

/*
 * KappaBatchPushDue tells whether rows are waiting to be pushed into views
 * and enough of them have gathered for a KappaBatchPush.
 */
static inline bool
KappaBatchPushDue(KappaBatch *batch)
{
	return batch->pushesRows &&
		batch->nrows - batch->pushedRows >= KAPPA_PUSH_CHUNK_ROWS;
}

/* in retention.c */
extern int64 KappaExpireRetainedRows(void);

/* in table_capture.c */
extern void KappaTableCaptureInit(void);
extern void KappaTableCaptureInstall(Oid relid);
extern void KappaTableCaptureRemove(Oid relid);
extern Oid	KappaTableChangeLogCreate(Oid relid, Oid matRelid);
extern List *KappaTableChangeLogTake(Oid log, TupleDesc rowtype, bool *truncated,
									 int64 *nrows);

/* ---------------------------------------------------------------- layer 4 */

typedef struct KappaViewInfo KappaViewInfo;

/*
 * The views of one stream as one backend has them loaded (stream_views.c):
 * what a writer of the stream feeds.
 */
struct KappaStreamViews
{
	Oid			relid;			/* the stream (foreign table), or the ordinary
								 * table the views aggregate */
	Oid			backingRelid;	/* heap of retained rows, or InvalidOid if the
								 * stream keeps none */
	List	   *views;			/* of KappaViewInfo *, in view-OID order; a
								 * view being rebuilt from Kafka has its
								 * building version right after it */
	List	   *logs;			/* OIDs of the change logs of new versions
								 * being built from the table, which writers
								 * append to (table_capture.c) */
	bool		valid;			/* false once invalidated */
	MemoryContext cxt;			/* holds this entry and its views */
};

/* in stream_views.c */
extern void KappaStreamViewsInit(void);
extern KappaStreamViews *KappaStreamViewsGet(Oid relid);
extern KappaStreamViews *KappaStreamViewsGetLocked(Oid relid);
extern void KappaStreamViewsRelease(KappaStreamViews *views);
extern void KappaStreamViewsInvalidate(Oid relid);

/* in view_apply.c */
extern KappaViewFeed *KappaViewFeedCreate(KappaStreamViews *views,
										  TupleDesc rowtype, Oid onlyMat,
										  MemoryContext parent);
extern bool KappaViewFeedNeedsRows(KappaViewFeed *feed);
extern bool KappaViewFeedPushes(KappaViewFeed *feed);
extern bool KappaViewFeedAccumulating(KappaViewFeed *feed);
extern void KappaViewFeedPush(KappaViewFeed *feed, HeapTuple *rows, int nrows);
extern void KappaViewFeedApply(KappaViewFeed *feed, KappaStreamViews *locked,
							   HeapTuple *rows, int nrows, bool accumulate);
extern void KappaViewFeedFlush(KappaViewFeed *feed, KappaStreamViews *locked);
extern void KappaViewFeedDestroy(KappaViewFeed *feed);
extern void KappaViewBackfill(KappaViewInfo *view, bool retained,
							  const KappaScanCut *cut);
extern void KappaViewRecompute(KappaViewInfo *view, Snapshot snapshot);

/*
 * Rows that entered (sign +1) or left (sign -1) an ordinary table that
 * continuous views aggregate: a trigger's transition table, or copies of
 * its rows (table_capture.c).
 */
typedef struct KappaTableChanges
{
	int			sign;
	struct Tuplestorestate *store;	/* or NULL */
	MinimalTuple *rows;			/* copies, when store is NULL */
	int			nrows;
} KappaTableChanges;

extern void KappaViewFeedChanges(KappaStreamViews *locked, TupleDesc rowtype,
								 List *changes);
extern void KappaViewTruncate(KappaStreamViews *locked);

/* ---------------------------------------------------------------- layer 6 */

/*
 * Rows that scans of a stream return while a view's delta query runs
 * (stream_scan.c); 'retained' makes them read the retained rows instead.
 */
/*
 * A cut through a stream's retained rows: the rows whose inserting
 * transaction a snapshot taken then saw as committed (its xmin, xmax and
 * in-progress xids).  Retained rows are only ever appended, so the rows
 * visible now that are inside the cut are the retained rows as they were
 * then (view_rebuild.c).
 */
struct KappaScanCut
{
	TransactionId xmin;
	TransactionId xmax;
	int			nxip;
	TransactionId *xip;
	int			nown;			/* the registering transaction's xids: its */
	TransactionId *own;			/* rows are inside (it does not feed them) */
};

typedef struct KappaScanSource
{
	Oid			streamRelid;
	HeapTuple  *rows;
	int			nrows;
	bool		retained;
	const KappaScanCut *cut;	/* retained rows inside this cut only, or NULL */
	struct KappaScanSource *outer;	/* set by KappaScanSourcePush */
} KappaScanSource;

/* in stream_scan.c */
extern void KappaScanSourcePush(KappaScanSource *source);
extern void KappaScanSourcePop(KappaScanSource *source);
extern double KappaScanSetPlannedRows(double rows);
extern void KappaStreamScanRoutine(FdwRoutine *routine);
extern AttrNumber *KappaRetainedColumnMap(TupleDesc stream, Relation backing);

/* in contracts.c (KappaContractRun is declared with KappaBatch) */
struct Trigger;

extern void KappaContractsInit(void);
extern void KappaContractsForKafka(void);
extern KappaContractRun *KappaContractBegin(Oid relid, MemoryContext parent);
extern bool KappaContractCheck(KappaContractRun *run, TupleTableSlot *slot);
extern void KappaContractEnd(KappaContractRun *run);
extern void KappaContractQuiet(KappaContractRun *run);
extern bool KappaIsExpectationTrigger(const struct Trigger *trigger);
extern bool KappaExpectationStops(Oid relid, const char *name);

/* ---------------------------------------------------------------- layer 7 */

/* in guc.c */
extern int	kappa_batch_size;
extern int	kappa_max_latency_ms;
extern int	kappa_stream_batch_memory_kb;
extern int	kappa_batch_bytes_kb;
extern double kappa_dead_letter_alert;
extern bool kappa_expectation_errors;
extern void KappaDefineGucs(void);

/* One row of kappa.view_catalog. */
typedef struct KappaViewRow
{
	Oid			view;			/* the user-facing view */
	Oid			stream;
	Oid			mat;			/* materialization */
	Oid			def;			/* definition */
	bool		building;		/* a version being rebuilt that live batches
								 * feed (mat and def are kappa.view_rebuilds') */
	Oid			log;			/* or, a version being built from its table
								 * that writers log their changes for */
} KappaViewRow;

/* in catalog.c */
extern void KappaCatalogInit(void);
extern Oid	KappaStreamServerOid(bool missing_ok);
extern bool KappaIsStream(Oid relid);
extern Relation KappaCatalogTable(const char *name);
extern AttrNumber KappaCatalogAttnum(Relation rel, const char *name);
extern void KappaReadStreamRow(Oid relid, Snapshot snapshot, Oid *backingRelid);
extern List *KappaReadViewRows(Oid relid, Snapshot snapshot);
extern bool KappaFindView(const char *column, Oid relid, KappaViewRow *row);
extern void KappaCatalogRebuildRegistered(Oid mat);
extern bool KappaCatalogSkippedOwnRebuild(void);
extern Oid	KappaStreamBackingRelid(Oid relid);

/* in util.c (the rest in util.h) */
extern void KappaExecUtility(Node *stmt, const char *sourceText);

#endif							/* PG_KAPPA_H */
