# Makefile for pg_kappa (PGXS)
#
#   make && make install          build and install the extension
#   make installcheck             pg_regress suite on a temporary instance
#                                 (started by pg_regress itself, see REGRESS_OPTS)
#   make isolationcheck           isolation specs (test/isolation)
#   make prove-check              TAP tests (test/t)
#
# The whole suite, dependencies included, is test/run.sh (see README.md).

MODULE_big = pg_kappa
EXTENSION = pg_kappa
# The install script of the current version is assembled from src/sql/*.sql
# (one part per concern); upgrade scripts from released versions are in
# src/sql/upgrade/.
EXTVERSION = 0.3
DATA_built = pg_kappa--$(EXTVERSION).sql
DATA = $(wildcard src/sql/upgrade/pg_kappa--*--*.sql)
PGFILEDESC = "pg_kappa - Kafka ingestion and continuous views for PostgreSQL"

OBJS = $(patsubst %.c,%.o,$(sort $(wildcard src/*.c)))
PG_CPPFLAGS = -I$(srcdir)/src -DKAPPA_EXTENSION_VERSION='"$(EXTVERSION)"'
SHLIB_LINK = -lrdkafka -lavro -lcurl
PG_CFLAGS = -Wall -Wextra -Wno-unused-parameter -Wno-missing-field-initializers \
	-Wno-sign-compare $(KAPPA_WERROR)

# pg_regress starts its own server with the library preloaded.
REGRESS = $(patsubst sql/%.sql,%,$(sort $(wildcard sql/*.sql)))
REGRESS_OPTS = --temp-config=$(srcdir)/test/regress.conf --temp-instance=./tmp_check \
	--load-extension=pg_kappa

# TAP tests in test/t, run by 'make prove-check' (not by installcheck)
PROVE_TESTS = $(sort $(wildcard test/t/*.pl))

# Dev broker on librdkafka's mock cluster, used by the demo and Kafka tests.
EXTRA_CLEAN = test/dev_broker tmp_check tmp_check_iso results output_iso log

PG_CONFIG ?= pg_config
PGXS := $(shell $(PG_CONFIG) --pgxs)
include $(PGXS)

all: test/dev_broker

# PGXS tracks no header dependencies (autodepend is off in Debian's build):
# rebuild every object when a header changes, so no object sees an old
# struct layout.
$(OBJS): $(wildcard src/*.h)

pg_kappa--$(EXTVERSION).sql: $(sort $(wildcard src/sql/*.sql))
	cat $^ > $@

test/dev_broker: test/dev_broker.c
	$(CC) $(CFLAGS) -O2 -Wall -Wextra $(KAPPA_WERROR) -o $@ $< -lrdkafka -lpthread

ISOLATION_SPECS = $(patsubst test/isolation/specs/%.spec,%,$(sort $(wildcard test/isolation/specs/*.spec)))
pg_isolation_regress = $(dir $(PGXS))../../src/test/isolation/pg_isolation_regress

isolationcheck:
	$(pg_isolation_regress) --inputdir=test/isolation --outputdir=output_iso \
	  --temp-config=$(srcdir)/test/regress.conf --temp-instance=./tmp_check_iso \
	  --bindir=$(bindir) --load-extension=pg_kappa $(ISOLATION_SPECS)

prove-check:
	$(prove_installcheck)

.PHONY: isolationcheck prove-check
