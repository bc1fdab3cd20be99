/* fuzz_proto: the coordinator (daemon/main.c, included here with its main
 * renamed) receiving untrusted worker messages, and everything it does with
 * them: decoding (common/proto.c), steps/epochs/events/tensors JSON lines
 * (daemon/runlog.c), epoch statistics (daemon/stats.c), the metrics snapshot
 * (daemon/metrics.c) and the summary. The MPI calls the coordinator makes
 * (all in common/proto_mpi.c, but MPI_Abort in coord_fatal) are replaced by
 * this file's: MPI_Iprobe hands out the input's next message
 * as the one asked for, MPI_Recv checks it is received whole, MPI_Abort
 * jumps back here. Input layout: tests/fuzz/fuzz_proto.h. Oracles, beyond
 * ASan and UBSan: every line written parses as a JSON object, and the job
 * ends only by running out of input, finishing, or a protocol error that
 * was logged first; log lines are formatted (so their arguments are checked)
 * but not printed. */
#include <setjmp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <jansson.h>

#define main clipd_main
#include "daemon/main.c"
#undef main

#include "tests/fuzz/fuzz_proto.h"
#include "tests/fuzz/fuzz_util.h"

static jmp_buf jump;                    /* MPI_Abort and end of input land here */
static const uint8_t *in_p, *in_end;    /* messages not yet handed out */
static const uint8_t *msg;              /* the probed message, until received */
static size_t msg_len;
static int msg_src, msg_tag, msg_probed;
static char last_error[1024];           /* the last LOG_ERROR line */

/* ---- the MPI the coordinator's loop uses ---- */

int MPI_Iprobe(int source, int tag, MPI_Comm comm, int *flag, MPI_Status *status)
{
    (void)comm;
    if (!msg_probed) {
        if (in_end - in_p < 2) longjmp(jump, 1); /* no more messages: the job would wait */
        size_t n = (size_t)in_p[0] | (size_t)in_p[1] << 8;
        in_p += 2;
        if (n > (size_t)(in_end - in_p)) n = (size_t)(in_end - in_p);
        msg = in_p, msg_len = n, in_p += n;
        msg_src = source, msg_tag = tag, msg_probed = 1;
    }
    if (source != msg_src || tag != msg_tag) abort(); /* probed one thing, asked for another */
    *flag = 1;
    status->MPI_SOURCE = source, status->MPI_TAG = tag, status->MPI_ERROR = MPI_SUCCESS;
    return MPI_SUCCESS;
}

int MPI_Get_count(const MPI_Status *status, MPI_Datatype datatype, int *count)
{
    if (!msg_probed || datatype != MPI_BYTE || status->MPI_SOURCE != msg_src) abort();
    *count = (int)msg_len;
    return MPI_SUCCESS;
}

int MPI_Recv(void *buf, int count, MPI_Datatype datatype, int source, int tag, MPI_Comm comm,
             MPI_Status *status)
{
    (void)comm, (void)status;
    /* Real MPI fails with MPI_ERR_TRUNCATE on a short buffer and leaves the
     * rest of a long one stale: the coordinator must receive exactly what it probed. */
    if (!msg_probed || datatype != MPI_BYTE || source != msg_src || tag != msg_tag ||
        count < 0 || (size_t)count != msg_len)
        abort();
    memcpy(buf, msg, msg_len);
    msg_probed = 0;
    return MPI_SUCCESS;
}

int MPI_Send(const void *buf, int count, MPI_Datatype datatype, int dest, int tag, MPI_Comm comm)
{
    (void)buf, (void)datatype, (void)tag, (void)comm;
    if (count <= 0 || dest < 1) abort();
    return MPI_SUCCESS;
}

int MPI_Abort(MPI_Comm comm, int errorcode)
{
    (void)comm, (void)errorcode;
    longjmp(jump, 2);
}

/* log_write, wrapped at link time (-Wl,--wrap=log_write): format, keep errors, print nothing. */
void __wrap_log_write(int level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void __wrap_log_write(int level, const char *fmt, ...)
{
    char line[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(line, sizeof line, fmt, ap);
    va_end(ap);
    if (level == LOG_ERROR) memcpy(last_error, line, sizeof line);
}

/* ---- the job ---- */

static char dir[64];

static void remove_dir(void) { fz_rm_rf(dir); }

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc, (void)argv;
    int fd = open("/dev/null", O_WRONLY); /* the summary goes to stdout */
    if (fd < 0 || dup2(fd, 1) < 0) abort();
    close(fd);
    fz_mkdtemp(dir, sizeof dir);
    atexit(remove_dir);
    log_level = LOG_DEBUG;
    return 0;
}

/* Every line of run.dir/name is a JSON object. */
static void check_json_lines(const char *name)
{
    char path[128], *line = NULL;
    size_t cap = 0;
    snprintf(path, sizeof path, "%s/%s", dir, name);
    FILE *f = fopen(path, "r");
    if (!f) abort();
    while (getline(&line, &cap, f) > 0) {
        json_error_t je;
        json_t *j = json_loads(line, 0, &je);
        if (!j || !json_is_object(j)) {
            fprintf(stderr, "%s: not a JSON object (%s): %s", name, je.text, line);
            abort();
        }
        json_decref(j);
    }
    free(line);
    fclose(f);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static Coord co;
    char err[512];
    if (size < 2) return 0;
    memset(&co, 0, sizeof co);
    fzp_config(&co.cfg, data[1], dir);
    if (cfg_validate(&co.cfg, err, sizeof err) != 0) abort();
    co.W = fzp_workers(data[0]);
    if (runlog_open(&co.log, dir, NULL, err, sizeof err) != 0) abort();
    in_p = data + 2, in_end = data + size, msg_probed = 0, last_error[0] = 0;
    sig_stop = sig_ckpt = sig_hup = 0;
    int how = setjmp(jump);
    if (how == 0) {
        coordinate(&co); /* frees and closes what it made */
    } else { /* jumped out of coordinate(): free what it had made */
        if (how == 2 && !strstr(last_error, "protocol error: worker ")) {
            fprintf(stderr, "MPI_Abort without a protocol error logged (last error: '%s')\n", last_error);
            abort();
        }
        metrics_stop(co.metrics);
        stats_free(&co.st);
        free(co.epochs), free(co.recs), free(co.clip_ring), free(co.slow_run), free(co.others);
        runlog_close(&co.log);
    }
    const char *files[] = {"steps.jsonl", "epochs.jsonl", "events.jsonl", "tensors.jsonl"};
    for (int i = 0; i < 4; i++) check_json_lines(files[i]);
    return 0;
}
