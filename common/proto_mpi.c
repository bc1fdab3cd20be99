/* proto_mpi: the coordinator-worker messages over the module's own
 * communicator (see proto_mpi.h); decoding is common/proto.c's. */
#include "common/proto_mpi.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/log.h"

int proto_open(Proto *p, char *err, size_t errlen)
{
    memset(p, 0, sizeof *p);
    for (int k = 0; k < PROTO_STEP_RING; k++) p->ring_req[k] = MPI_REQUEST_NULL;
    if (MPI_Comm_dup(MPI_COMM_WORLD, &p->comm) != MPI_SUCCESS || MPI_Comm_rank(p->comm, &p->rank) != MPI_SUCCESS ||
        MPI_Comm_size(p->comm, &p->size) != MPI_SUCCESS)
        return snprintf(err, errlen, "cannot duplicate MPI_COMM_WORLD for the coordinator-worker messages"), -1;
    return 0;
}

void proto_abort_v(const char *fmt, va_list ap)
{
    char msg[1024];
    vsnprintf(msg, sizeof msg, fmt, ap);
    LOG(LOG_ERROR, "%s", msg);
    MPI_Abort(MPI_COMM_WORLD, 1);
    _exit(1);
}

void proto_close(Proto *p)
{
    if (p->comm != MPI_COMM_NULL) MPI_Comm_free(&p->comm);
}

int proto_bcast_config(Proto *p, ConfigMsg *m)
{
    return MPI_Bcast(m, sizeof *m, MPI_BYTE, 0, p->comm) == MPI_SUCCESS ? 0 : -1;
}

/* ---- coordinator ---- */

int proto_send_ctrl(Proto *p, const CtrlMsg *m)
{
    for (int r = 1; r < p->size; r++)
        if (MPI_Send(m, sizeof *m, MPI_BYTE, r, TAG_CTRL, p->comm) != MPI_SUCCESS) return -1;
    return 0;
}

int proto_send_req(Proto *p, const ReqMsg *q)
{
    return MPI_Send(q, sizeof *q, MPI_BYTE, 1, TAG_REQ, p->comm) == MPI_SUCCESS ? 0 : -1;
}

int proto_poll(Proto *p, int w, int tag)
{
    int flag = 0;
    MPI_Iprobe(w + 1, tag, p->comm, &flag, &p->probed);
    return flag;
}

/* Receive what proto_poll found, whole: into buf when it fits in cap
 * bytes, else into *scratch (the caller frees it). Returns where it is and
 * sets *len, or NULL with err when memory for it is lacking. */
static const void *recv_whole(Proto *p, void *buf, size_t cap, size_t *len, void **scratch, char *err,
                              size_t errlen)
{
    int n = 0;
    MPI_Get_count(&p->probed, MPI_BYTE, &n);
    *scratch = NULL;
    *len = n > 0 ? (size_t)n : 0;
    void *dst = buf;
    if (*len > cap && !(dst = *scratch = malloc(*len)))
        return snprintf(err, errlen, "out of memory receiving a %zu-byte message", *len), NULL;
    MPI_Recv(dst, (int)*len, MPI_BYTE, p->probed.MPI_SOURCE, p->probed.MPI_TAG, p->comm, MPI_STATUS_IGNORE);
    return dst;
}

typedef int (*Decoder)(void *out, const void *buf, size_t len, const ProtoLimits *lim, char *err, size_t errlen);

static int recv_decode(Proto *p, int w, int tag, void *out, size_t size, Decoder decode, char *err,
                       size_t errlen)
{
    union { StepRecord s; EpochRecord e; DoneMsg d; } raw; /* a message of the right size, aligned */
    size_t n;
    void *big;
    if (p->probed.MPI_SOURCE != w + 1 || p->probed.MPI_TAG != tag)
        return snprintf(err, errlen, "receive of tag %d without a poll that found it", tag), -1;
    const void *m = recv_whole(p, &raw, size, &n, &big, err, errlen);
    if (!m) return -1;
    int bad = decode(out, m, n, &p->lim, err, errlen);
    free(big);
    return bad;
}

/* The decoders, each with its own record type, behind one signature. */
static int dec_step(void *o, const void *b, size_t n, const ProtoLimits *l, char *e, size_t el)
{
    return proto_decode_step(o, b, n, l, e, el);
}
static int dec_epoch(void *o, const void *b, size_t n, const ProtoLimits *l, char *e, size_t el)
{
    return proto_decode_epoch(o, b, n, l, e, el);
}
static int dec_done(void *o, const void *b, size_t n, const ProtoLimits *l, char *e, size_t el)
{
    return proto_decode_done(o, b, n, l, e, el);
}

int proto_recv_step(Proto *p, int w, StepRecord *out, char *err, size_t errlen)
{
    return recv_decode(p, w, TAG_STEP, out, sizeof *out, dec_step, err, errlen);
}

int proto_recv_epoch(Proto *p, int w, EpochRecord *out, char *err, size_t errlen)
{
    return recv_decode(p, w, TAG_EPOCH, out, sizeof *out, dec_epoch, err, errlen);
}

int proto_recv_done(Proto *p, int w, DoneMsg *out, char *err, size_t errlen)
{
    return recv_decode(p, w, TAG_DONE, out, sizeof *out, dec_done, err, errlen);
}

/* ---- worker ---- */

int proto_recv_ctrl(Proto *p, CtrlMsg *m)
{
    return MPI_Recv(m, sizeof *m, MPI_BYTE, 0, TAG_CTRL, p->comm, MPI_STATUS_IGNORE) == MPI_SUCCESS ? 0 : -1;
}

int proto_poll_req(Proto *p)
{
    int bits = 0, flag = 1;
    while (flag) {
        MPI_Iprobe(0, TAG_REQ, p->comm, &flag, MPI_STATUS_IGNORE);
        if (!flag) break;
        ReqMsg q;
        MPI_Recv(&q, sizeof q, MPI_BYTE, 0, TAG_REQ, p->comm, MPI_STATUS_IGNORE);
        bits |= q.type;
    }
    return bits;
}

StepRecord *proto_step_slot(Proto *p, int64_t seq)
{
    int k = (int)(seq % PROTO_STEP_RING);
    return MPI_Wait(&p->ring_req[k], MPI_STATUS_IGNORE) == MPI_SUCCESS ? &p->ring[k] : NULL;
}

int proto_send_step(Proto *p, int64_t seq)
{
    int k = (int)(seq % PROTO_STEP_RING);
    return MPI_Issend(&p->ring[k], sizeof p->ring[k], MPI_BYTE, 0, TAG_STEP, p->comm, &p->ring_req[k]) ==
                   MPI_SUCCESS ? 0 : -1;
}

int proto_flush_steps(Proto *p)
{
    return MPI_Waitall(PROTO_STEP_RING, p->ring_req, MPI_STATUSES_IGNORE) == MPI_SUCCESS ? 0 : -1;
}

int proto_send_epoch(Proto *p, const EpochRecord *e)
{
    return MPI_Send(e, sizeof *e, MPI_BYTE, 0, TAG_EPOCH, p->comm) == MPI_SUCCESS ? 0 : -1;
}

int proto_send_done(Proto *p, const DoneMsg *d)
{
    return MPI_Send(d, sizeof *d, MPI_BYTE, 0, TAG_DONE, p->comm) == MPI_SUCCESS ? 0 : -1;
}
