/* proto_mpi: the coordinator-worker messages of common/proto.h over MPI.
 * Every send and receive between the coordinator and a worker goes through
 * here, on a communicator this module owns (a dup of MPI_COMM_WORLD made
 * once by proto_open, so no library traffic on world can match a message of
 * ours). Workers are numbered 0..W-1 (world rank w + 1). The decoding of a
 * received message (common/proto.c) stays free of MPI, so the fuzzer and
 * the unit tests reach it without a job. */
#ifndef CLIPD_PROTO_MPI_H
#define CLIPD_PROTO_MPI_H

#include <mpi.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include "common/proto.h"

#define PROTO_STEP_RING 4 /* step records a worker may have in flight */

typedef struct {
    MPI_Comm comm;      /* dup of MPI_COMM_WORLD, freed by proto_close */
    int rank, size;     /* world rank (0: the coordinator) and size */
    ProtoLimits lim;    /* coordinator: what every worker message is checked against */
    MPI_Status probed;  /* coordinator: the message the last proto_poll found */
    /* worker: step records in flight (MPI_Issend), slot seq % PROTO_STEP_RING */
    StepRecord ring[PROTO_STEP_RING];
    MPI_Request ring_req[PROTO_STEP_RING];
} Proto;

/* After MPI_Init, on every rank, before any other collective: dup world.
 * Returns 0, or -1 with err. */
int proto_open(Proto *p, char *err, size_t errlen);
void proto_close(Proto *p);

/* A fatal error after MPI_Init: one log line (fmt, ap), then MPI_Abort
 * takes every rank down (exit 1). Both roles' fatal helpers end here
 * (coord_fatal in daemon/main.c, worker_fatal in worker/main.c). */
void proto_abort_v(const char *fmt, va_list ap) __attribute__((format(printf, 1, 0), noreturn));

/* Start: the coordinator's ConfigMsg to every rank (root: world rank 0). */
int proto_bcast_config(Proto *p, ConfigMsg *m);

/* ---- coordinator ---- */
/* CtrlMsg to every worker; ReqMsg to worker 0. */
int proto_send_ctrl(Proto *p, const CtrlMsg *m);
int proto_send_req(Proto *p, const ReqMsg *q);
/* 1 when a message with tag (TAG_STEP, TAG_EPOCH, TAG_DONE) from worker w
 * is queued; the next proto_recv_* of w and tag receives that one. Never
 * blocks. */
int proto_poll(Proto *p, int w, int tag);
/* The message proto_poll found, received whole whatever its size (MPI never
 * truncates it) and decoded against p->lim (proto_decode_*). Returns 0, or
 * -1 with one line in err naming the field (or the memory it lacked). */
int proto_recv_step(Proto *p, int w, StepRecord *out, char *err, size_t errlen);
int proto_recv_epoch(Proto *p, int w, EpochRecord *out, char *err, size_t errlen);
int proto_recv_done(Proto *p, int w, DoneMsg *out, char *err, size_t errlen);

/* ---- worker ---- */
/* Blocks for the coordinator's next CtrlMsg. */
int proto_recv_ctrl(Proto *p, CtrlMsg *m);
/* Worker 0: the REQ_* bits of every ReqMsg queued (0: none); never blocks. */
int proto_poll_req(Proto *p);
/* The ring slot for step seq, once its earlier send has completed (NULL if
 * that send failed); fill it, then proto_send_step(p, seq) sends it without
 * waiting (MPI_Issend: complete once the coordinator has received it, so a
 * worker runs at most PROTO_STEP_RING steps ahead). proto_flush_steps waits
 * for every send in flight. 0, or -1 when MPI failed. */
StepRecord *proto_step_slot(Proto *p, int64_t seq);
int proto_send_step(Proto *p, int64_t seq);
int proto_flush_steps(Proto *p);
int proto_send_epoch(Proto *p, const EpochRecord *e);
int proto_send_done(Proto *p, const DoneMsg *d);

#endif
