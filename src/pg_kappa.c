/*-------------------------------------------------------------------------
 *
 * pg_kappa.c
 *	  Module entry point: settings, shared memory and background workers are
 *	  set up here when the library is loaded.
 *
 * The library works in two ways.  Loaded through shared_preload_libraries
 * it registers the launcher that keeps Kafka sources running across
 * restarts.  Loaded on first use (CREATE EXTENSION, or the first access to a
 * stream) streams and continuous views work fully; Kafka sources then run
 * only until the next restart, and the functions that start them say so.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "fmgr.h"
#include "miscadmin.h"

#include "pg_kappa.h"
#include "kafka.h"
#include "stats.h"

PG_MODULE_MAGIC;

bool		kappa_loaded_via_preload = false;

void		_PG_init(void);

/*
 * _PG_init defines the settings everywhere and, when preloaded, registers
 * shared memory and the launcher.
 */
void
_PG_init(void)
{
	KappaDefineGucs();
	KappaCatalogInit();
	KappaStreamViewsInit();
	KappaTableCaptureInit();
	KappaContractsInit();

	if (!process_shared_preload_libraries_in_progress)
		return;

	kappa_loaded_via_preload = true;
	KappaStatsPreloadInit();
	KappaKafkaPreloadInit();
}
