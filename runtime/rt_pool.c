/* runtime: the persistent thread pool every kernel call runs on. Workers
 * spin briefly for the next job (kernel calls come back to back in a
 * forward pass), then sleep on a condition variable; each thread keeps its
 * scratch buffer between calls. */
#include <errno.h>
#include <stdint.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <cblas.h>
#include <immintrin.h>

#include "rt_private.h"

/* How long a thread polls for the next job (or the caller for the end of
 * one) before it sleeps. Waking a sleeping thread costs 40-100 us on the
 * VMs measured (the futex wake and the other vCPU's return from halt),
 * more than a GEMV from cache; kernel calls in a forward pass come back to
 * back with gaps of some microseconds, but a gap of a few tens (a norm, the
 * attention, the bench's cache flush ending unevenly) outlasted the old
 * 4,000 PAUSEs. One PAUSE per 64 polls: a loop of PAUSEs alone makes the
 * hypervisor deschedule the vCPU (pause-loop exiting), the opposite of
 * the aim. */
#define SPIN_NS 1000000 /* 1 ms */
#define SPIN_POLLS 64

typedef struct {
	void *raw;   /* allocation */
	void *buf;   /* 64-aligned inside raw */
	size_t cap;
} scratch;

struct qtk_rt_pool {
	unsigned n;             /* threads, the caller's included */
	pthread_t *th;          /* [n - 1] workers */
	unsigned started;       /* workers created */
	pthread_mutex_t mu;     /* guards the sleeping side of gen / pending */
	pthread_cond_t wake;    /* a new job or stop */
	pthread_cond_t done;    /* pending reached 0 */
	pthread_mutex_t run_mu; /* one job at a time */
	pthread_mutex_t call_mu; /* one kernel call (its buffers) at a time */
	uint64_t gen;           /* job generation (atomic) */
	unsigned pending;       /* workers not done with this job (atomic) */
	unsigned sleeping;      /* workers in (or entering) the wait on wake (atomic) */
	int stop;               /* atomic */
	/* the current job */
	size_t jn;
	qtk_rt_range_fn fn;
	void *ctx;
	scratch *scr;           /* [n] */
	rt_act act;
};

typedef struct {
	qtk_rt_pool *p;
	unsigned t;
} worker_arg;

static void run_range(qtk_rt_pool *p, unsigned t)
{
	size_t b = p->jn * t / p->n, e = p->jn * (t + 1) / p->n;

	if (b < e)
		p->fn(p->ctx, b, e, t);
}

static uint64_t now_ns(void)
{
	struct timespec t;

	clock_gettime(CLOCK_MONOTONIC, &t);
	return (uint64_t)t.tv_sec * 1000000000u + (uint64_t)t.tv_nsec;
}

/* Poll for SPIN_NS at most until gen moves past seen (or stop), or, with
 * seen NULL, until no worker is pending; 1 if it came. */
static int spin_for(qtk_rt_pool *p, const uint64_t *seen)
{
	uint64_t t0 = now_ns();

	for (;;) {
		for (int i = 0; i < SPIN_POLLS; i++) {
			if (seen ? __atomic_load_n(&p->gen, __ATOMIC_ACQUIRE) != *seen ||
			                   __atomic_load_n(&p->stop, __ATOMIC_ACQUIRE)
			         : !__atomic_load_n(&p->pending, __ATOMIC_ACQUIRE))
				return 1;
		}
		_mm_pause();
		if (now_ns() - t0 > SPIN_NS)
			return 0;
	}
}

/* Wait until gen moves past *seen (or stop); 0 when stopping. */
static int wait_job(qtk_rt_pool *p, uint64_t *seen)
{
	if (!spin_for(p, seen)) {
		pthread_mutex_lock(&p->mu);
		/* announced before gen is read again: pool_run reads sleeping
		 * after moving gen (both sequentially consistent), so one of the
		 * two sees the other */
		__atomic_add_fetch(&p->sleeping, 1, __ATOMIC_SEQ_CST);
		while (__atomic_load_n(&p->gen, __ATOMIC_SEQ_CST) == *seen &&
		       !__atomic_load_n(&p->stop, __ATOMIC_ACQUIRE))
			pthread_cond_wait(&p->wake, &p->mu);
		__atomic_sub_fetch(&p->sleeping, 1, __ATOMIC_SEQ_CST);
		pthread_mutex_unlock(&p->mu);
	}
	if (__atomic_load_n(&p->stop, __ATOMIC_ACQUIRE))
		return 0;
	*seen = __atomic_load_n(&p->gen, __ATOMIC_ACQUIRE);
	return 1;
}

static void *worker(void *arg)
{
	worker_arg *w = arg;
	qtk_rt_pool *p = w->p;
	unsigned t = w->t;
	uint64_t seen = 0;

	qtk_free(w);
	while (wait_job(p, &seen)) {
		run_range(p, t);
		if (__atomic_sub_fetch(&p->pending, 1, __ATOMIC_ACQ_REL) == 0) {
			pthread_mutex_lock(&p->mu);
			pthread_cond_signal(&p->done);
			pthread_mutex_unlock(&p->mu);
		}
	}
	return NULL;
}

void qtk_rt_pool_free(qtk_rt_pool *p)
{
	if (!p)
		return;
	pthread_mutex_lock(&p->mu);
	__atomic_store_n(&p->stop, 1, __ATOMIC_RELEASE);
	pthread_cond_broadcast(&p->wake);
	pthread_mutex_unlock(&p->mu);
	for (unsigned i = 0; i < p->started; i++)
		pthread_join(p->th[i], NULL);
	for (unsigned i = 0; p->scr && i < p->n; i++)
		qtk_free(p->scr[i].raw);
	qtk_free(p->scr);
	qtk_free(p->th);
	rt_act_free(&p->act);
	pthread_mutex_destroy(&p->mu);
	pthread_mutex_destroy(&p->run_mu);
	pthread_mutex_destroy(&p->call_mu);
	pthread_cond_destroy(&p->wake);
	pthread_cond_destroy(&p->done);
	qtk_free(p);
}

qtk_err qtk_rt_pool_create(unsigned nthreads, qtk_rt_pool **out, qtk_status *st)
{
	qtk_rt_pool *p;

	if (!out)
		return qtk_fail(st, QTK_E_ARG, "thread pool: no output pointer");
	*out = NULL;
	if (nthreads == 0) {
		long n = sysconf(_SC_NPROCESSORS_ONLN);
		nthreads = n > 0 ? (unsigned)n : 1;
	}
	if (nthreads > 1024)
		return qtk_fail(st, QTK_E_ARG, "thread pool: %u threads (at most 1024)", nthreads);
	p = qtk_calloc(1, sizeof *p);
	if (!p)
		return qtk_fail(st, QTK_E_NOMEM, "thread pool: out of memory");
	p->n = nthreads;
	pthread_mutex_init(&p->mu, NULL);
	pthread_mutex_init(&p->run_mu, NULL);
	pthread_mutex_init(&p->call_mu, NULL);
	pthread_cond_init(&p->wake, NULL);
	pthread_cond_init(&p->done, NULL);
	p->scr = qtk_calloc(nthreads, sizeof *p->scr);
	p->th = qtk_calloc(nthreads, sizeof *p->th);
	if (!p->scr || !p->th) {
		qtk_rt_pool_free(p);
		return qtk_fail(st, QTK_E_NOMEM, "thread pool: out of memory");
	}
	for (unsigned t = 1; t < nthreads; t++) {
		worker_arg *w = qtk_malloc(sizeof *w);
		int e = ENOMEM;

		if (w) {
			w->p = p;
			w->t = t;
			e = pthread_create(&p->th[t - 1], NULL, worker, w);
		}
		if (e) {
			qtk_free(w);
			qtk_rt_pool_free(p);
			return qtk_fail(st, e == ENOMEM ? QTK_E_NOMEM : QTK_E_IO,
			                "thread pool: cannot start thread %u of %u: %s", t + 1,
			                nthreads, strerror(e));
		}
		p->started++;
	}
	/* qtk splits the rows of float products itself: OpenBLAS threads would
	 * only compete with the pool for the same cores */
	openblas_set_num_threads(1);
	*out = p;
	return QTK_OK;
}

unsigned qtk_rt_pool_threads(const qtk_rt_pool *p)
{
	return p ? p->n : 1;
}

void qtk_rt_pool_run(qtk_rt_pool *p, size_t n, qtk_rt_range_fn fn, void *ctx)
{
	if (!p || p->n == 1 || n <= 1) {
		if (n)
			fn(ctx, 0, n, 0);
		return;
	}
	pthread_mutex_lock(&p->run_mu);
	p->jn = n;
	p->fn = fn;
	p->ctx = ctx;
	__atomic_store_n(&p->pending, p->n - 1, __ATOMIC_RELEASE);
	__atomic_add_fetch(&p->gen, 1, __ATOMIC_SEQ_CST);
	/* the system call only when a worker sleeps (or is about to: it then
	 * holds mu until it waits, and the broadcast waits for mu) */
	if (__atomic_load_n(&p->sleeping, __ATOMIC_SEQ_CST)) {
		pthread_mutex_lock(&p->mu);
		pthread_cond_broadcast(&p->wake);
		pthread_mutex_unlock(&p->mu);
	}
	run_range(p, 0);
	if (!spin_for(p, NULL)) {
		pthread_mutex_lock(&p->mu);
		while (__atomic_load_n(&p->pending, __ATOMIC_ACQUIRE))
			pthread_cond_wait(&p->done, &p->mu);
		pthread_mutex_unlock(&p->mu);
	}
	pthread_mutex_unlock(&p->run_mu);
}

void *rt_pool_scratch(qtk_rt_pool *p, unsigned t, size_t n)
{
	scratch *s = &p->scr[t];

	if (n <= s->cap)
		return s->buf;
	if (n > SIZE_MAX - 64)
		return NULL;
	qtk_free(s->raw);
	s->cap = 0;
	s->buf = NULL;
	s->raw = qtk_malloc(n + 64);
	if (!s->raw)
		return NULL;
	s->buf = (uint8_t *)s->raw + (64 - (uintptr_t)s->raw % 64) % 64;
	s->cap = n;
	return s->buf;
}

rt_act *rt_pool_act(qtk_rt_pool *p)
{
	return &p->act;
}

void rt_pool_lock(qtk_rt_pool *p)
{
	pthread_mutex_lock(&p->call_mu);
}

void rt_pool_unlock(qtk_rt_pool *p)
{
	pthread_mutex_unlock(&p->call_mu);
}
