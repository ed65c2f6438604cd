/*
 * rtpgen: a paced RTP load generator for bench/run_rtp.py (loopback only).
 *
 * It plays both ends of N RTP streams. Stream i has an endpoint A (a UDP
 * socket on --a-ip) and an endpoint B (a UDP socket on --b-ip). A sends to
 * the relay address it is told for A, B to the one for B; what the relay
 * forwards comes back on the other endpoint, where it is counted.
 *
 * Protocol with the harness (one line each way at a time, text):
 *   rtpgen -> "BOUND i a_port b_port"   for every stream, then "READY"
 *   harness -> "TARGET i a_ip a_port b_ip b_port"  for every stream, then "GO"
 *   rtpgen  warms up (not counted), -> "WARM ok=K of=M"
 *   harness -> "RUN" (after reading the relay's CPU), or "QUIT"
 *   rtpgen  sends for --secs, -> "SENT_DONE", drains for --drain s,
 *           -> "RESULT {json}", then waits for "EXIT" (the harness reads the
 *           UDP drop counters of the still open sockets meanwhile).
 *
 * Packets are 172 bytes: a 12-byte RTP v2 header (PT 0, PCMU) and 160 bytes
 * of payload, the size of 20 ms of G.711. The payload starts with a tag
 * (stream, direction, phase, counter, send time) so every packet received is
 * checked: right stream, right direction, measured or warm-up, latency.
 *
 * Sending is paced on a 1 ms timerfd with sendmmsg (one call per socket and
 * tick); the streams of a direction take turns so each stream gets an even
 * spacing. A generator that falls behind (it shares 2 cores) does not burst
 * to catch up beyond MAX_CATCHUP_MS (or two packets per stream, if more):
 * the rest is skipped and reported, so a stall here is not turned into a
 * burst that the relay is blamed for.
 * Receiving uses epoll and recvmmsg.
 *
 * Safety: only 127.0.0.0/8 is accepted, for binding and as a target;
 * --secs <= 120, --drain <= 5, at most 4000 streams and 2e6 packets/s in
 * total; alarm() ends the process whatever happens (harness gone, stdin
 * never answered).
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/timerfd.h>
#include <time.h>
#include <unistd.h>

#define PKT_LEN 172
#define RTP_HDR 12
#define MAX_STREAMS 4000
#define MAX_TOTAL_PPS 2000000.0
#define MAX_SECS 120.0
#define MAX_DRAIN 5.0
#define MAX_CATCHUP_MS 5.0
#define BATCH 256
#define RECV_BATCH 64
#define MAGIC 0x52475031u /* "RGP1" */
#define HIST_FINE 1000     /* 1 us buckets below 1 ms */
#define HIST_COARSE 9990   /* then 100 us buckets up to 1 s */
#define HIST_SIZE (HIST_FINE + HIST_COARSE + 1)

struct tag {             /* the first bytes of the payload */
    uint32_t magic;
    uint32_t stream;
    uint8_t dir;         /* 0: sent by A, 1: sent by B */
    uint8_t phase;       /* 0: warm-up, 1: measured */
    uint8_t pad[2];
    uint64_t counter;
    uint64_t sent_ns;
} __attribute__((packed));

struct endpoint {
    int fd;
    struct sockaddr_in self, target;
    uint16_t seq;
    uint32_t ts, ssrc;
    uint64_t counter;      /* packets sent (all phases) */
    uint64_t sent[2];      /* per phase */
    uint64_t recv[2];      /* per phase, packets of the other endpoint */
    uint64_t last_counter; /* highest counter seen from the other endpoint + 1 */
};

struct stream {
    struct endpoint ep[2]; /* 0: A, 1: B */
};

static struct stream *streams;
static int nstreams;
static uint64_t hist[HIST_SIZE];
static uint64_t misrouted, foreign, reordered, late_warmup, recv_errors, send_errors, skipped[2];
static double max_lag_ms;
static unsigned char bufs[BATCH][PKT_LEN];
static unsigned char rbufs[RECV_BATCH][2048];

static void die(const char *what) {
    fprintf(stdout, "ERROR %s: %s\n", what, strerror(errno));
    fflush(stdout);
    exit(2);
}

static void fail(const char *msg) {
    fprintf(stdout, "ERROR %s\n", msg);
    fflush(stdout);
    exit(2);
}

static uint64_t now_ns(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (uint64_t)t.tv_sec * 1000000000ull + (uint64_t)t.tv_nsec;
}

static double cpu_s(void) {
    struct rusage u;
    getrusage(RUSAGE_SELF, &u);
    return u.ru_utime.tv_sec + u.ru_utime.tv_usec / 1e6 + u.ru_stime.tv_sec + u.ru_stime.tv_usec / 1e6;
}

static int loopback(const struct in_addr *a) {
    return (ntohl(a->s_addr) >> 24) == 127;
}

static void parse_ip(const char *text, struct in_addr *out) {
    if (inet_pton(AF_INET, text, out) != 1)
        fail("not an IPv4 address");
    if (!loopback(out))
        fail("refusing a non-loopback address (only 127.0.0.0/8)");
}

static int open_socket(const struct in_addr *ip, int rcvbuf, struct sockaddr_in *bound) {
    int fd = socket(AF_INET, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0)
        die("socket");
    /* SO_RCVBUFFORCE passes net.core.rmem_max when we may; else the capped one */
    if (setsockopt(fd, SOL_SOCKET, SO_RCVBUFFORCE, &rcvbuf, sizeof rcvbuf) < 0)
        setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &rcvbuf, sizeof rcvbuf);
    setsockopt(fd, SOL_SOCKET, SO_SNDBUFFORCE, &rcvbuf, sizeof rcvbuf);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr = *ip, .sin_port = 0};
    if (bind(fd, (struct sockaddr *)&sa, sizeof sa) < 0)
        die("bind");
    socklen_t len = sizeof *bound;
    if (getsockname(fd, (struct sockaddr *)bound, &len) < 0)
        die("getsockname");
    return fd;
}

static char *read_line(char *buf, size_t size) {
    if (!fgets(buf, (int)size, stdin))
        fail("stdin closed");
    buf[strcspn(buf, "\r\n")] = 0;
    return buf;
}

static void fill(unsigned char *p, int s, int d, int phase, uint64_t t) {
    struct endpoint *e = &streams[s].ep[d];
    p[0] = 0x80;
    p[1] = e->seq == 0 ? 0x80 : 0x00; /* marker on the first packet, PT 0 */
    uint16_t seq = htons(e->seq++);
    uint32_t ts = htonl(e->ts), ssrc = htonl(e->ssrc);
    e->ts += 160;
    memcpy(p + 2, &seq, 2);
    memcpy(p + 4, &ts, 4);
    memcpy(p + 8, &ssrc, 4);
    struct tag tag = {.magic = MAGIC, .stream = (uint32_t)s, .dir = (uint8_t)d, .phase = (uint8_t)phase,
                      .counter = e->counter++, .sent_ns = t};
    memcpy(p + RTP_HDR, &tag, sizeof tag);
    e->sent[phase]++;
}

/* send `count` packets of direction d from stream s */
static void send_burst(int s, int d, int count, int phase) {
    struct endpoint *e = &streams[s].ep[d];
    struct mmsghdr msgs[BATCH];
    struct iovec iov[BATCH];
    while (count > 0) {
        int n = count < BATCH ? count : BATCH;
        uint64_t t = now_ns();
        for (int i = 0; i < n; i++) {
            fill(bufs[i], s, d, phase, t);
            iov[i].iov_base = bufs[i];
            iov[i].iov_len = PKT_LEN;
            memset(&msgs[i].msg_hdr, 0, sizeof msgs[i].msg_hdr);
            msgs[i].msg_hdr.msg_name = &e->target;
            msgs[i].msg_hdr.msg_namelen = sizeof e->target;
            msgs[i].msg_hdr.msg_iov = &iov[i];
            msgs[i].msg_hdr.msg_iovlen = 1;
        }
        int done = 0;
        while (done < n) {
            int r = sendmmsg(e->fd, msgs + done, (unsigned)(n - done), 0);
            if (r < 0) {
                if (errno == EINTR)
                    continue;
                /* EAGAIN/ENOBUFS/ECONNREFUSED: count the rest as not sent */
                send_errors += (uint64_t)(n - done);
                e->sent[phase] -= (uint64_t)(n - done);
                break;
            }
            done += r;
        }
        count -= n;
    }
}

static void record_latency(uint64_t ns) {
    uint64_t us = ns / 1000;
    size_t b;
    if (us < HIST_FINE)
        b = (size_t)us;
    else if (us < 1000000)
        b = HIST_FINE + (size_t)((us - HIST_FINE) / 100);
    else
        b = HIST_SIZE - 1;
    if (b >= HIST_SIZE)
        b = HIST_SIZE - 1;
    hist[b]++;
}

static double bucket_us(size_t b) {
    if (b < HIST_FINE)
        return (double)b;
    return HIST_FINE + (double)(b - HIST_FINE) * 100.0;
}

static double percentile(double q) {
    uint64_t total = 0, acc = 0;
    for (size_t b = 0; b < HIST_SIZE; b++)
        total += hist[b];
    if (!total)
        return -1;
    uint64_t want = (uint64_t)(q * (double)total);
    if (want >= total)
        want = total - 1;
    for (size_t b = 0; b < HIST_SIZE; b++) {
        acc += hist[b];
        if (acc > want)
            return bucket_us(b);
    }
    return bucket_us(HIST_SIZE - 1);
}

/* drain one socket: endpoint d of stream s */
static void receive(int s, int d, int measured) {
    struct endpoint *e = &streams[s].ep[d];
    struct mmsghdr msgs[RECV_BATCH];
    struct iovec iov[RECV_BATCH];
    for (;;) {
        for (int i = 0; i < RECV_BATCH; i++) {
            iov[i].iov_base = rbufs[i];
            iov[i].iov_len = sizeof rbufs[i];
            memset(&msgs[i].msg_hdr, 0, sizeof msgs[i].msg_hdr);
            msgs[i].msg_hdr.msg_iov = &iov[i];
            msgs[i].msg_hdr.msg_iovlen = 1;
        }
        int n = recvmmsg(e->fd, msgs, RECV_BATCH, MSG_DONTWAIT, NULL);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            if (errno != EAGAIN && errno != EWOULDBLOCK)
                recv_errors++;
            return;
        }
        uint64_t t = now_ns();
        for (int i = 0; i < n; i++) {
            struct tag tag;
            if (msgs[i].msg_len != PKT_LEN) {
                foreign++;
                continue;
            }
            memcpy(&tag, rbufs[i] + RTP_HDR, sizeof tag);
            if (tag.magic != MAGIC || tag.stream >= (uint32_t)nstreams || tag.dir > 1 || tag.phase > 1) {
                foreign++;
                continue;
            }
            if ((int)tag.stream != s || tag.dir == d) {
                misrouted++;
                continue;
            }
            if (tag.phase == 0 && measured)
                late_warmup++;
            e->recv[tag.phase]++;
            if (tag.counter + 1 < e->last_counter)
                reordered++;
            else
                e->last_counter = tag.counter + 1;
            if (tag.phase == 1)
                record_latency(t - tag.sent_ns);
        }
        if (n < RECV_BATCH)
            return;
    }
}

struct loop {
    int ep, tfd;
};

/* run the event loop: send at `pps` per stream and direction for `secs`
 * (pps 0: only receive), in `phase`; receive meanwhile */
static void run(struct loop *L, double pps, double secs, int phase, int measured) {
    uint64_t start = now_ns(), end = start + (uint64_t)(secs * 1e9);
    double total = pps * nstreams; /* per direction */
    uint64_t due_sent[2] = {0, 0};
    int rr[2] = {0, 0};
    struct epoll_event ev[256];
    for (;;) {
        uint64_t t = now_ns();
        if (t >= end)
            break;
        int timeout_ms = (int)((end - t) / 1000000) + 1;
        int n = epoll_wait(L->ep, ev, 256, timeout_ms);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            die("epoll_wait");
        }
        int tick = 0;
        for (int i = 0; i < n; i++) {
            uint64_t key = ev[i].data.u64;
            if (key == UINT64_MAX) {
                uint64_t expirations;
                if (read(L->tfd, &expirations, sizeof expirations) < 0 && errno != EAGAIN)
                    die("timerfd read");
                tick = 1;
            } else {
                receive((int)(key >> 1), (int)(key & 1), measured);
            }
        }
        if (!tick || total <= 0)
            continue;
        t = now_ns();
        if (t > end)
            t = end;
        double elapsed = (double)(t - start) / 1e9;
        for (int d = 0; d < 2; d++) {
            uint64_t should = (uint64_t)(elapsed * total);
            if (should <= due_sent[d])
                continue;
            uint64_t due = should - due_sent[d];
            double lag_ms = (double)due / total * 1000.0;
            if (lag_ms > max_lag_ms)
                max_lag_ms = lag_ms;
            /* catch up at most MAX_CATCHUP_MS worth, or two packets per
             * stream when that is more (many slow streams: a short stall
             * then costs each stream a packet or two, which is no burst) */
            uint64_t cap = (uint64_t)(total * MAX_CATCHUP_MS / 1000.0) + 1;
            if (cap < 2 * (uint64_t)nstreams)
                cap = 2 * (uint64_t)nstreams;
            if (due > cap) {
                if (measured)
                    skipped[d] += due - cap;
                due_sent[d] += due - cap;
                due = cap;
            }
            due_sent[d] += due;
            /* streams take turns: stream rr gets the next packet */
            uint64_t per = due / (uint64_t)nstreams, extra = due % (uint64_t)nstreams;
            for (int k = 0; k < nstreams; k++) {
                int s = (rr[d] + k) % nstreams;
                uint64_t c = per + ((uint64_t)k < extra ? 1 : 0);
                if (c)
                    send_burst(s, d, (int)c, phase);
            }
            rr[d] = (int)((rr[d] + extra) % (uint64_t)nstreams);
        }
    }
}

static void usage(void) {
    fprintf(stderr,
            "usage: rtpgen --streams N --pps PPS --secs S [--a-ip 127.0.0.1] [--b-ip 127.0.0.1]\n"
            "              [--drain S] [--warmup S] [--warmup-pps PPS] [--rcvbuf BYTES]\n"
            "  PPS is per stream and per direction; loopback only; S <= 120.\n");
    exit(2);
}

int main(int argc, char **argv) {
    int n = 0, rcvbuf = 4 << 20;
    double pps = 0, secs = 0, drain = 1.0, warmup = 1.0, warmup_pps = 20;
    struct in_addr a_ip, b_ip;
    parse_ip("127.0.0.1", &a_ip);
    b_ip = a_ip;
    for (int i = 1; i < argc; i++) {
        const char *o = argv[i];
        if (i + 1 >= argc)
            usage();
        const char *v = argv[++i];
        if (!strcmp(o, "--streams"))
            n = atoi(v);
        else if (!strcmp(o, "--pps"))
            pps = atof(v);
        else if (!strcmp(o, "--secs"))
            secs = atof(v);
        else if (!strcmp(o, "--drain"))
            drain = atof(v);
        else if (!strcmp(o, "--warmup"))
            warmup = atof(v);
        else if (!strcmp(o, "--warmup-pps"))
            warmup_pps = atof(v);
        else if (!strcmp(o, "--rcvbuf"))
            rcvbuf = atoi(v);
        else if (!strcmp(o, "--a-ip"))
            parse_ip(v, &a_ip);
        else if (!strcmp(o, "--b-ip"))
            parse_ip(v, &b_ip);
        else
            usage();
    }
    if (n < 1 || n > MAX_STREAMS)
        fail("--streams must be 1..4000");
    if (!(secs > 0 && secs <= MAX_SECS))
        fail("--secs must be in (0, 120]: every run is bounded");
    if (!(drain >= 0 && drain <= MAX_DRAIN) || !(warmup >= 0 && warmup <= 10))
        fail("--drain must be 0..5 and --warmup 0..10");
    if (!(pps > 0) || pps * n * 2 > MAX_TOTAL_PPS || warmup_pps < 0 || warmup_pps * n * 2 > MAX_TOTAL_PPS)
        fail("--pps must be > 0 and at most 2e6 packets/s in total");
    /* a hard bound on the whole process, waiting for the harness included */
    alarm((unsigned)(secs + drain + warmup + 120));
    signal(SIGPIPE, SIG_IGN);
    setvbuf(stdout, NULL, _IOLBF, 0);

    nstreams = n;
    streams = calloc((size_t)n, sizeof *streams);
    if (!streams)
        die("calloc");
    struct loop L;
    L.ep = epoll_create1(EPOLL_CLOEXEC);
    if (L.ep < 0)
        die("epoll_create1");
    srand((unsigned)getpid());
    for (int s = 0; s < n; s++) {
        for (int d = 0; d < 2; d++) {
            struct endpoint *e = &streams[s].ep[d];
            e->fd = open_socket(d ? &b_ip : &a_ip, rcvbuf, &e->self);
            e->seq = (uint16_t)(rand() | 1);
            e->ts = (uint32_t)rand();
            e->ssrc = 0x5200000u ^ (uint32_t)(s * 2 + d);
            struct epoll_event ev = {.events = EPOLLIN, .data.u64 = ((uint64_t)s << 1) | (uint64_t)d};
            if (epoll_ctl(L.ep, EPOLL_CTL_ADD, e->fd, &ev) < 0)
                die("epoll_ctl");
        }
        printf("BOUND %d %u %u\n", s, ntohs(streams[s].ep[0].self.sin_port), ntohs(streams[s].ep[1].self.sin_port));
    }
    printf("READY\n");

    char line[256];
    int targets = 0;
    for (;;) {
        read_line(line, sizeof line);
        if (!strcmp(line, "GO"))
            break;
        if (!strcmp(line, "QUIT"))
            return 0;
        int s;
        char aip[64], bip[64];
        unsigned ap, bp;
        if (sscanf(line, "TARGET %d %63s %u %63s %u", &s, aip, &ap, bip, &bp) != 5 || s < 0 || s >= n ||
            ap < 1 || ap > 65535 || bp < 1 || bp > 65535)
            fail("bad TARGET line");
        for (int d = 0; d < 2; d++) {
            struct endpoint *e = &streams[s].ep[d];
            e->target.sin_family = AF_INET;
            parse_ip(d ? bip : aip, &e->target.sin_addr);
            e->target.sin_port = htons((uint16_t)(d ? bp : ap));
        }
        targets++;
    }
    for (int s = 0; s < n; s++)
        if (!streams[s].ep[0].target.sin_port || !streams[s].ep[1].target.sin_port)
            fail("a stream has no TARGET");

    L.tfd = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC);
    if (L.tfd < 0)
        die("timerfd_create");
    struct itimerspec its = {.it_interval = {0, 1000000}, .it_value = {0, 1000000}};
    if (timerfd_settime(L.tfd, 0, &its, NULL) < 0)
        die("timerfd_settime");
    struct epoll_event tev = {.events = EPOLLIN, .data.u64 = UINT64_MAX};
    if (epoll_ctl(L.ep, EPOLL_CTL_ADD, L.tfd, &tev) < 0)
        die("epoll_ctl timer");

    /* warm-up: lets relays learn/latch both ends; not counted */
    if (warmup > 0 && warmup_pps > 0) {
        run(&L, warmup_pps, warmup, 0, 0);
        run(&L, 0, 0.3, 0, 0);
    }
    int ok = 0;
    for (int s = 0; s < n; s++)
        for (int d = 0; d < 2; d++)
            ok += streams[s].ep[d].recv[0] > 0;
    printf("WARM ok=%d of=%d\n", ok, 2 * n);
    read_line(line, sizeof line);
    if (strcmp(line, "RUN"))
        return 0;

    max_lag_ms = 0;
    double cpu0 = cpu_s();
    uint64_t t0 = now_ns();
    run(&L, pps, secs, 1, 1);
    double send_wall = (double)(now_ns() - t0) / 1e9;
    double cpu_send = cpu_s() - cpu0;
    printf("SENT_DONE\n");
    run(&L, 0, drain, 1, 1);
    double cpu_all = cpu_s() - cpu0;

    uint64_t sent[2] = {0, 0}, recv[2] = {0, 0}, dead = 0;
    for (int s = 0; s < n; s++) {
        for (int d = 0; d < 2; d++) {
            sent[d] += streams[s].ep[d].sent[1];
            recv[d] += streams[s].ep[1 - d].recv[1]; /* what d sent arrives at 1-d */
        }
        if (!streams[s].ep[0].recv[1] || !streams[s].ep[1].recv[1])
            dead++;
    }
    printf("RESULT {\"streams\": %d, \"pps_per_stream_dir\": %.3f, \"secs\": %.3f, \"send_wall_s\": %.3f, "
           "\"sent_ab\": %llu, \"recv_ab\": %llu, \"sent_ba\": %llu, \"recv_ba\": %llu, "
           "\"skipped_ab\": %llu, \"skipped_ba\": %llu, \"send_errors\": %llu, \"recv_errors\": %llu, "
           "\"misrouted\": %llu, \"foreign\": %llu, \"reordered\": %llu, \"late_warmup\": %llu, "
           "\"streams_without_traffic\": %llu, \"max_lag_ms\": %.2f, "
           "\"lat_p50_us\": %.0f, \"lat_p99_us\": %.0f, \"lat_p999_us\": %.0f, \"lat_max_us\": %.0f, "
           "\"gen_cpu_s\": %.3f, \"gen_cpu_send_s\": %.3f}\n",
           n, pps, secs, send_wall, (unsigned long long)sent[0], (unsigned long long)recv[0],
           (unsigned long long)sent[1], (unsigned long long)recv[1], (unsigned long long)skipped[0],
           (unsigned long long)skipped[1], (unsigned long long)send_errors, (unsigned long long)recv_errors,
           (unsigned long long)misrouted, (unsigned long long)foreign, (unsigned long long)reordered,
           (unsigned long long)late_warmup, (unsigned long long)dead, max_lag_ms, percentile(0.5),
           percentile(0.99), percentile(0.999), percentile(1.0), cpu_all, cpu_send);
    /* keep the sockets open until the harness has read their drop counters */
    if (fgets(line, sizeof line, stdin)) {
    }
    return 0;
}
