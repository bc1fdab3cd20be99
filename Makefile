# clipd build. `make` builds the coordinator and the worker, `make test` runs
# the cmocka unit tests, the sanitizer builds (unit tests and real jobs),
# the real mpirun end-to-end tests, a job under valgrind and a short fuzzing
# pass; `make run` trains the default config, `make bench` measures speed.
CC      := mpicc
BUILD   := build
VERSION := 0.1.0
BLAS_CFLAGS := $(shell pkg-config --cflags openblas 2>/dev/null)
BLAS_LIBS   := $(shell pkg-config --libs openblas 2>/dev/null || echo -lopenblas)
OPT     ?= -O2 -g
CFLAGS  := $(OPT) -std=c11 -D_POSIX_C_SOURCE=200809L -Wall -Wextra -Wshadow -Werror -MMD -MP \
           -I. $(BLAS_CFLAGS) -DCLIPD_VERSION='"$(VERSION)"'
MHD_LIBS    := $(shell pkg-config --libs libmicrohttpd 2>/dev/null || echo -lmicrohttpd)
LDLIBS_COMMON := $(MHD_LIBS) -lyaml -ljansson -lm -pthread
LDLIBS_WORKER := $(BLAS_LIBS) $(MHD_LIBS) -lyaml -ljansson -lm -pthread

COMMON_SRC := $(wildcard common/*.c)
WORKER_SRC := $(filter-out worker/main.c,$(wildcard worker/*.c))
DAEMON_SRC := $(filter-out daemon/main.c,$(wildcard daemon/*.c))
COMMON_OBJ := $(COMMON_SRC:%.c=$(BUILD)/%.o)
WORKER_OBJ := $(WORKER_SRC:%.c=$(BUILD)/%.o)
DAEMON_OBJ := $(DAEMON_SRC:%.c=$(BUILD)/%.o)
# clipd-report (daemon/report/): everything but its 3-line main, which the
# unit tests and the fuzz harness do without.
REPORT_SRC := $(filter-out daemon/report/main.c,$(wildcard daemon/report/*.c))
REPORT_OBJ := $(REPORT_SRC:%.c=$(BUILD)/%.o)

UNIT_TESTS := $(patsubst tests/%.c,$(BUILD)/tests/%,$(wildcard tests/test_*.c))
TOOLS      := $(BUILD)/tests/stcmp $(BUILD)/tests/mpi_sync $(BUILD)/tests/mpi_proto $(BUILD)/tests/bench_tool $(BUILD)/tests/netwire

all: $(BUILD)/clipd $(BUILD)/clipd-worker $(BUILD)/clipd-report

# The kernels: -O3 so the gate, softmax, optimizer and norm loops vectorise (no -ffast-math:
# the same bits on every worker, vectorised or not; -fno-trapping-math lets
# the selects of fastmath.h become blends, -fno-math-errno lets sqrtf
# vectorise; values unchanged).
$(BUILD)/worker/layers.o $(BUILD)/worker/optim.o $(BUILD)/worker/sync.o: CFLAGS += -O3 -fno-trapping-math -fno-math-errno

$(BUILD)/%.o: %.c
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -c $< -o $@

$(BUILD)/clipd: $(BUILD)/daemon/main.o $(DAEMON_OBJ) $(COMMON_OBJ)
	$(CC) $(CFLAGS) -o $@ $^ $(LDLIBS_COMMON)

$(BUILD)/clipd-worker: $(BUILD)/worker/main.o $(WORKER_OBJ) $(COMMON_OBJ)
	$(CC) $(CFLAGS) -o $@ $^ $(LDLIBS_WORKER)

# The report reads a run directory's files; it needs no MPI, only the
# statistics and the config loader (RUN_DIR/config.yaml).
REPORT_DEPS := $(BUILD)/daemon/stats.o $(BUILD)/daemon/records.o $(BUILD)/common/cfg.o $(BUILD)/common/events.o \
               $(BUILD)/common/fsutil.o $(BUILD)/common/hash.o $(BUILD)/common/utf8.o
$(BUILD)/clipd-report: $(BUILD)/daemon/report/main.o $(REPORT_OBJ) $(REPORT_DEPS)
	$(CC) $(CFLAGS) -o $@ $^ -lyaml -ljansson -lm

# Unit tests link every non-main object, plus cmocka. test_model counts
# the model's sgemm calls through a wrapper.
$(BUILD)/tests/test_model: LDFLAGS += -Wl,--wrap=cblas_sgemm
$(BUILD)/tests/test_%: $(BUILD)/tests/test_%.o $(WORKER_OBJ) $(DAEMON_OBJ) $(REPORT_OBJ) $(COMMON_OBJ)
	$(CC) $(CFLAGS) $(LDFLAGS) -o $@ $^ -lcmocka $(LDLIBS_WORKER)

$(BUILD)/tests/mpi_sync: $(BUILD)/tests/mpi_sync.o $(WORKER_OBJ) $(COMMON_OBJ)
	$(CC) $(CFLAGS) -o $@ $^ $(LDLIBS_WORKER)

$(BUILD)/tests/mpi_proto: $(BUILD)/tests/mpi_proto.o $(COMMON_OBJ)
	$(CC) $(CFLAGS) -o $@ $^ $(LDLIBS_COMMON)

$(BUILD)/tests/bench_tool: $(BUILD)/tests/bench/bench_tool.o $(WORKER_OBJ) $(COMMON_OBJ)
	$(CC) $(CFLAGS) -o $@ $^ $(LDLIBS_WORKER)

$(BUILD)/tests/stcmp: $(BUILD)/tests/tools/stcmp.o
	$(CC) $(CFLAGS) -o $@ $^ -lm

$(BUILD)/tests/netwire: $(BUILD)/tests/tools/netwire.o
	$(CC) $(CFLAGS) -o $@ $^

# test_state calls MPI_Init (a singleton here, 3 ranks in t_10): under ASan
# Open MPI's own leaks are suppressed as in tests/asan/run.sh (full malloc
# stacks: the fast unwinder stops inside Open MPI's components).
MPI_UNIT_ENV := ASAN_OPTIONS=fast_unwind_on_malloc=0:malloc_context_size=40 \
                LSAN_OPTIONS=suppressions=$(CURDIR)/tests/asan/lsan.supp
unit: $(UNIT_TESTS)
	@set -e; for t in $(UNIT_TESTS); do echo "== $$t"; \
	    case $$t in */test_state) env $(MPI_UNIT_ENV) $$t ;; *) $$t ;; esac; done

e2e: all $(TOOLS) $(BUILD)/tests/test_state
	bash tests/e2e/run.sh

test: unit asan e2e valgrind fuzz-smoke monitoring

# deploy/monitoring/: promtool check rules, promtool test rules, the dashboard's
# JSON and PromQL, metric names against what the coordinator serves.
monitoring:
	bash tests/monitoring.sh

# Under AddressSanitizer and UndefinedBehaviorSanitizer, leaks checked: the
# unit tests, then real mpirun jobs with the coordinator and workers built
# the same way (tests/asan/run.sh; suppressions for Open MPI's libraries
# only, in tests/asan/lsan.supp).
ASAN_OPT := -O1 -g -fsanitize=address,undefined,float-cast-overflow -fno-omit-frame-pointer -fno-sanitize-recover=all
asan:
	$(MAKE) BUILD=$(BUILD)/asan OPT="$(ASAN_OPT)" unit all
	bash tests/asan/run.sh $(BUILD)/asan

# One real job, coordinator and workers under valgrind memcheck (about 40 s;
# suppressions for Open MPI's libraries only, tests/valgrind/openmpi.supp).
valgrind: all
	bash tests/valgrind/run.sh $(BUILD)

# Speed figures as ratios measured in the same run (see tests/bench/bench.sh).
bench: all $(TOOLS)
	bash tests/bench/bench.sh

# Divergence detection through the real path: healthy runs of every shipped
# config and injected faults; build/detbench.json (see tests/bench/detbench.sh).
detbench: all
	bash tests/bench/detbench.sh

run: all # the demo: each `make run` replaces the last one's run dir
	deploy/clipd-launch -n 2 configs/default.yaml --set run.overwrite=true

# Fuzz what reads untrusted bytes (config, checkpoints, text, run dirs,
# worker messages, HTTP requests) with libFuzzer (clang, libclang-rt-14-dev):
# FUZZ_SECONDS per harness. fuzz-smoke, in `make test`: 5 s each, seeds and
# committed regression inputs replayed first.
FUZZ_SECONDS ?= 60
fuzz:
	bash tests/fuzz/run.sh $(FUZZ_SECONDS)
fuzz-smoke:
	bash tests/fuzz/run.sh 5

# make install PREFIX=/opt/clipd: binaries and the launcher in bin/, configs
# in share/clipd/configs/, the --help text (every config key with its
# default) in share/doc/clipd/clipd.txt.
PREFIX ?= /usr/local
install: all
	install -d $(DESTDIR)$(PREFIX)/bin $(DESTDIR)$(PREFIX)/share/clipd/configs $(DESTDIR)$(PREFIX)/share/doc/clipd
	install -m 755 $(BUILD)/clipd $(BUILD)/clipd-worker $(BUILD)/clipd-report deploy/clipd-launch $(DESTDIR)$(PREFIX)/bin/
	install -m 644 configs/*.yaml $(DESTDIR)$(PREFIX)/share/clipd/configs/
	$(BUILD)/clipd --help > $(DESTDIR)$(PREFIX)/share/doc/clipd/clipd.txt

clean:
	rm -rf $(BUILD)

.PHONY: all unit e2e test asan valgrind bench detbench run install fuzz fuzz-smoke monitoring clean
-include $(shell find $(BUILD) -name '*.d' 2>/dev/null)
