/* netwire: a network link with a one-way delay and a rate limit, in user
 * space, for the multi-node tests (tests/e2e/netns.sh) on kernels without
 * sch_netem. It creates two TAP devices and forwards every Ethernet frame
 * one receives out of the other, each direction a FIFO: a frame leaves
 * DELAY_US after it came in, and no sooner than the previous one's end at
 * RATE_MBIT (its serialization time, len * 8 / rate). Runs until killed.
 * usage: netwire TAP_A TAP_B DELAY_US RATE_MBIT */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <linux/if.h>
#include <linux/if_tun.h>
#include <poll.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <time.h>
#include <unistd.h>

#define SLOTS 4096  /* frames queued per direction; more are dropped, as a full router queue does */
#define FRAME 2048  /* bytes of a slot: a 1500-byte MTU frame and its header */

typedef struct {
    unsigned char buf[SLOTS][FRAME];
    int len[SLOTS];
    int64_t due[SLOTS]; /* ns, CLOCK_MONOTONIC */
    int head, n;
    int64_t last; /* when the previous frame has left */
    long lost;    /* frames that could not be written */
} Queue;

static int64_t now_ns(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (int64_t)t.tv_sec * 1000000000 + t.tv_nsec;
}

static int tap_open(const char *name)
{
    int fd = open("/dev/net/tun", O_RDWR | O_NONBLOCK);
    if (fd < 0) return -1;
    struct ifreq r;
    memset(&r, 0, sizeof r);
    r.ifr_flags = IFF_TAP | IFF_NO_PI;
    snprintf(r.ifr_name, IFNAMSIZ, "%s", name);
    if (ioctl(fd, TUNSETIFF, &r) < 0) {
        close(fd);
        return -1;
    }
    return fd;
}

/* Read every frame waiting on fd into q. */
static void take(int fd, Queue *q, int64_t delay, double ns_per_byte)
{
    for (;;) {
        int64_t t = now_ns();
        int slot = (q->head + q->n) % SLOTS;
        unsigned char scratch[FRAME];
        unsigned char *to = q->n < SLOTS ? q->buf[slot] : scratch;
        ssize_t len = read(fd, to, FRAME);
        if (len <= 0) return; /* EAGAIN: all read */
        if (to == scratch) continue; /* queue full: dropped */
        int64_t start = t + delay > q->last ? t + delay : q->last;
        q->last = start + (int64_t)(ns_per_byte * (double)len);
        q->len[slot] = (int)len, q->due[slot] = q->last;
        q->n++;
    }
}

/* Write out the frames of q that are due; returns the next due time or -1. */
static int64_t give(int fd, Queue *q)
{
    int64_t t = now_ns();
    while (q->n && q->due[q->head] <= t) {
        /* a frame that cannot go out (its TAP set down) is lost, as on a wire */
        if (write(fd, q->buf[q->head], (size_t)q->len[q->head]) < 0) q->lost++;
        q->head = (q->head + 1) % SLOTS, q->n--;
    }
    return q->n ? q->due[q->head] : -1;
}

int main(int argc, char **argv)
{
    char *end1, *end2;
    long delay_us = argc == 5 ? strtol(argv[3], &end1, 10) : -1;
    double mbit = argc == 5 ? strtod(argv[4], &end2) : -1;
    if (argc != 5 || *end1 || *end2 || delay_us < 0 || delay_us > 10000000 || !(mbit > 0)) {
        fprintf(stderr, "usage: netwire TAP_A TAP_B DELAY_US RATE_MBIT\n");
        return 2;
    }
    int fd[2] = {tap_open(argv[1]), tap_open(argv[2])};
    if (fd[0] < 0 || fd[1] < 0) {
        fprintf(stderr, "netwire: cannot create TAP devices %s, %s: %s\n", argv[1], argv[2], strerror(errno));
        return 1;
    }
    static Queue q[2]; /* q[i]: frames read from fd[i], to go out of fd[1 - i] */
    int64_t delay = (int64_t)delay_us * 1000;
    double ns_per_byte = 8e3 / mbit;
    for (;;) {
        int64_t next = -1;
        for (int i = 0; i < 2; i++) {
            int64_t d = give(fd[1 - i], &q[i]);
            if (d >= 0 && (next < 0 || d < next)) next = d;
        }
        struct pollfd p[2] = {{fd[0], POLLIN, 0}, {fd[1], POLLIN, 0}};
        struct timespec wait, *w = NULL;
        if (next >= 0) {
            int64_t dt = next - now_ns();
            if (dt < 0) dt = 0;
            wait = (struct timespec){dt / 1000000000, dt % 1000000000};
            w = &wait;
        }
        if (ppoll(p, 2, w, NULL) < 0 && errno != EINTR) return 1;
        for (int i = 0; i < 2; i++)
            if (p[i].revents & POLLIN) take(fd[i], &q[i], delay, ns_per_byte);
    }
}
