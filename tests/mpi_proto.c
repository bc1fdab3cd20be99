/* mpi_proto: the protocol module (common/proto_mpi.c) under a real mpirun,
 * rank 0 as the coordinator and W = size - 1 workers:
 *   mpirun -np W+1 build/tests/mpi_proto
 * Checks: the module's communicator is a dup of world (congruent, not the
 * same), and a message on MPI_COMM_WORLD with a protocol tag is never seen
 * by it; the ConfigMsg broadcast; CtrlMsg to every worker; 3 x the ring of
 * step records per worker (proto_step_slot/proto_send_step) received and
 * decoded in order; a ReqMsg folded by worker 0; a step message of the wrong
 * size (longer, then shorter) received whole and refused with the decoder's
 * line; DoneMsg after proto_flush_steps. Prints what failed; exits non-zero
 * on any failure. */
#include <mpi.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/proto_mpi.h"

#define STEPS (3 * PROTO_STEP_RING)

static int failures;

#define CHECK(cond, ...) \
    do { if (!(cond)) { fprintf(stderr, "mpi_proto: rank %d: ", rank), fprintf(stderr, __VA_ARGS__), \
                        fprintf(stderr, "\n"), failures++; } } while (0)

static int rank;

static void small_config(Config *c)
{
    cfg_defaults(c);
    c->model_vocab = 8, c->model_embed = 4, c->model_hidden = 4, c->model_layers = 1;
    c->data_seq_len = 4, c->data_batch_per_worker = 2, c->train_epochs = 1;
}

static void fill_step(StepRecord *r, const ProtoLimits *lim, int64_t step, int wrank)
{
    memset(r, 0, sizeof *r);
    r->step = r->seq = step, r->epoch = 1, r->wrank = wrank;
    r->loss = 1.5, r->grad_norm = 0.5, r->clip_coef = 1.0, r->max_abs = 0.1, r->lr = 0.01;
    r->ntensors = lim->ntensors, r->tokens = lim->step_tokens, r->action = ACT_LOG;
    r->step_ms = 1, r->compute_ms = 0.5, r->sync_ms = 0.5;
}

/* Poll until worker w's message with tag is there (a real wait, no sleep needed here). */
static void wait_for(Proto *p, int w, int tag)
{
    while (!proto_poll(p, w, tag)) {}
}

static void coordinator(Proto *p, int W)
{
    char err[256];
    int flag = 0;
    /* A message on world with the step tag: not the protocol's. */
    MPI_Iprobe(1, TAG_STEP, MPI_COMM_WORLD, &flag, MPI_STATUS_IGNORE);
    MPI_Barrier(MPI_COMM_WORLD); /* worker 0 has sent it on world */
    for (int i = 0; i < 1000 && !flag; i++) MPI_Iprobe(1, TAG_STEP, MPI_COMM_WORLD, &flag, MPI_STATUS_IGNORE);
    CHECK(flag, "the message on MPI_COMM_WORLD did not arrive");
    CHECK(!proto_poll(p, 0, TAG_STEP), "proto_poll saw a message sent on MPI_COMM_WORLD");
    char junk[8];
    MPI_Recv(junk, sizeof junk, MPI_BYTE, 1, TAG_STEP, MPI_COMM_WORLD, MPI_STATUS_IGNORE);

    CtrlMsg m = {CTRL_EPOCH, 1, 7, 0, 0};
    CHECK(proto_send_ctrl(p, &m) == 0, "proto_send_ctrl failed");
    ReqMsg q = {REQ_CHECKPOINT, 0};
    CHECK(proto_send_req(p, &q) == 0, "proto_send_req failed");
    for (int64_t s = 1; s <= STEPS; s++)
        for (int w = 0; w < W; w++) {
            StepRecord r;
            wait_for(p, w, TAG_STEP);
            int rc = proto_recv_step(p, w, &r, err, sizeof err);
            CHECK(rc == 0, "step %lld from worker %d refused: %s", (long long)s, w, err);
            CHECK(rc != 0 || (r.step == s && r.wrank == w), "step %lld from worker %d: got step %lld wrank %d",
                  (long long)s, w, (long long)r.step, r.wrank);
        }
    /* Worker 0 sends a step message 100 bytes too long, then one 1 byte short. */
    for (int k = 0; k < 2; k++) {
        StepRecord r;
        char want[64];
        wait_for(p, 0, TAG_STEP);
        snprintf(want, sizeof want, "step record: %zu bytes", k ? sizeof r - 1 : sizeof r + 100);
        CHECK(proto_recv_step(p, 0, &r, err, sizeof err) == -1 && strstr(err, want),
              "a step message of the wrong size: expected '%s...', got '%s'", want, err);
    }
    m = (CtrlMsg){CTRL_STOP, 0, 0, 1, 0};
    CHECK(proto_send_ctrl(p, &m) == 0, "proto_send_ctrl (stop) failed");
    for (int w = 0; w < W; w++) {
        DoneMsg d;
        wait_for(p, w, TAG_DONE);
        CHECK(proto_recv_done(p, w, &d, err, sizeof err) == 0 && d.wrank == w && d.steps == STEPS,
              "done from worker %d: %s (wrank %d, steps %lld)", w, err, d.wrank, (long long)d.steps);
    }
}

static void worker(Proto *p, int w)
{
    const ProtoLimits *lim = &p->lim;
    char junk[8] = {0};
    if (w == 0) MPI_Send(junk, sizeof junk, MPI_BYTE, 0, TAG_STEP, MPI_COMM_WORLD);
    MPI_Barrier(MPI_COMM_WORLD);
    CtrlMsg m;
    CHECK(proto_recv_ctrl(p, &m) == 0 && m.type == CTRL_EPOCH && m.epoch == 1 && m.seed == 7,
          "epoch control message: type %d epoch %d", m.type, m.epoch);
    int req = 0;
    for (int64_t s = 1; s <= STEPS; s++) {
        StepRecord *r = proto_step_slot(p, s);
        CHECK(r != NULL, "proto_step_slot failed");
        if (!r) break;
        fill_step(r, lim, s, w);
        CHECK(proto_send_step(p, s) == 0, "proto_send_step failed");
        if (w == 0) req |= proto_poll_req(p);
    }
    if (w == 0) {
        for (int i = 0; i < 100000 && !req; i++) req |= proto_poll_req(p);
        CHECK(req == REQ_CHECKPOINT, "worker 0 got requests 0x%x, expected 0x%x", (unsigned)req, REQ_CHECKPOINT);
        static char big[sizeof(StepRecord) + 100];
        MPI_Send(big, (int)sizeof big, MPI_BYTE, 0, TAG_STEP, p->comm);
        MPI_Send(big, (int)sizeof(StepRecord) - 1, MPI_BYTE, 0, TAG_STEP, p->comm);
    }
    CHECK(proto_recv_ctrl(p, &m) == 0 && m.type == CTRL_STOP && m.final == 1, "stop control message");
    CHECK(proto_flush_steps(p) == 0, "proto_flush_steps failed");
    DoneMsg d;
    memset(&d, 0, sizeof d);
    d.wrank = w, d.steps = STEPS;
    CHECK(proto_send_done(p, &d) == 0, "proto_send_done failed");
}

int main(int argc, char **argv)
{
    MPI_Init(&argc, &argv);
    static Proto p;
    static ConfigMsg msg;
    char err[256];
    if (proto_open(&p, err, sizeof err) != 0) {
        fprintf(stderr, "mpi_proto: %s\n", err);
        MPI_Abort(MPI_COMM_WORLD, 1);
    }
    rank = p.rank;
    int W = p.size - 1, cmp = MPI_UNEQUAL;
    MPI_Comm_compare(p.comm, MPI_COMM_WORLD, &cmp);
    CHECK(cmp == MPI_CONGRUENT, "the protocol's communicator is not a dup of world (compare %d)", cmp);
    if (W < 1) {
        fprintf(stderr, "mpi_proto: needs at least 2 ranks\n");
        MPI_Abort(MPI_COMM_WORLD, 2);
    }
    if (rank == 0) {
        small_config(&msg.cfg);
        msg.go = 1;
    }
    CHECK(proto_bcast_config(&p, &msg) == 0 && msg.go == 1 && msg.cfg.model_hidden == 4,
          "ConfigMsg broadcast: go %d, model.hidden %d", msg.go, msg.cfg.model_hidden);
    proto_limits(&p.lim, &msg.cfg, W);
    if (rank == 0) coordinator(&p, W);
    else worker(&p, rank - 1);
    int any = 0;
    MPI_Allreduce(&failures, &any, 1, MPI_INT, MPI_SUM, MPI_COMM_WORLD);
    if (rank == 0) printf("mpi_proto: %d workers, %d steps each: %s\n", W, STEPS, any ? "FAILED" : "ok");
    proto_close(&p);
    MPI_Finalize();
    return any ? 1 : 0;
}
