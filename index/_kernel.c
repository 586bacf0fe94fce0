/*
 * Compiled core of the Hamming index: fused XOR + popcount + top-k selection,
 * the same scan for radius queries, and an open-addressing table that maps
 * string ids to rows without one Python object per item.
 *
 * Every function takes plain buffers (numpy arrays through the buffer
 * protocol), checks their sizes once, releases the GIL and trusts its inputs
 * from there on.  The Python wrappers in index/kernels.py own the arrays.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#if defined(__GNUC__) && defined(__x86_64__)
#include <immintrin.h>
#define HAVE_AVX2_PATH 1
#endif

#if defined(__GNUC__) && (defined(__x86_64__) || defined(__i386__))
/* popcnt is in every x86-64 CPU since 2008; the function-level target keeps
 * the rest of the module baseline so that it still loads anywhere. */
#define HOT __attribute__((target("popcnt")))
#else
#define HOT
#endif

#define MAX_THREADS 64

/* ------------------------------------------------------------------ */
/* buffers                                                             */

typedef struct {
    Py_buffer view;
    int held;
} buf_t;

static int get_buf(PyObject *obj, buf_t *b, int writable, Py_ssize_t itemsize,
                   const char *name) {
    int flags = PyBUF_C_CONTIGUOUS | (writable ? PyBUF_WRITABLE : 0);
    b->held = 0;
    if (PyObject_GetBuffer(obj, &b->view, flags) < 0) {
        return -1;
    }
    b->held = 1;
    if (b->view.itemsize != itemsize) {
        PyErr_Format(PyExc_TypeError, "%s: expected items of %zd bytes, got %zd",
                     name, itemsize, b->view.itemsize);
        return -1;
    }
    return 0;
}

static void release(buf_t *b) {
    if (b->held) {
        PyBuffer_Release(&b->view);
        b->held = 0;
    }
}

static Py_ssize_t n_items(const buf_t *b) { return b->view.len / b->view.itemsize; }

/* ------------------------------------------------------------------ */
/* top-k: a max-heap ordered by (distance, row)                         */

static inline int heap_greater(int32_t da, int64_t ra, int32_t db, int64_t rb) {
    return da > db || (da == db && ra > rb);
}

/* Replace the root (the current worst) with a better entry and sift down. */
static inline void heap_replace_top(int32_t *d, int64_t *r, Py_ssize_t k,
                                    int32_t nd, int64_t nr) {
    Py_ssize_t i = 0;
    for (;;) {
        Py_ssize_t c = 2 * i + 1;
        if (c >= k) break;
        if (c + 1 < k && heap_greater(d[c + 1], r[c + 1], d[c], r[c])) c++;
        if (!heap_greater(d[c], r[c], nd, nr)) break;
        d[i] = d[c];
        r[i] = r[c];
        i = c;
    }
    d[i] = nd;
    r[i] = nr;
}

/* In-place heap sort: the max-heap becomes ascending (distance, row). */
static void heap_sort(int32_t *d, int64_t *r, Py_ssize_t k) {
    for (Py_ssize_t end = k - 1; end > 0; end--) {
        int32_t td = d[end];
        int64_t tr = r[end];
        d[end] = d[0];
        r[end] = r[0];
        heap_replace_top(d, r, end, td, tr);
    }
}

/* ------------------------------------------------------------------ */
/* the scan                                                            */

static inline HOT int32_t hamming(const uint64_t *a, const uint64_t *b, Py_ssize_t w) {
    int32_t s = 0;
    for (Py_ssize_t j = 0; j < w; j++) s += __builtin_popcountll(a[j] ^ b[j]);
    return s;
}

/* Full (distance, row) comparison, so candidates may be offered in any order. */
static inline HOT void consider(int32_t d, int64_t row, int32_t *hd, int64_t *hr,
                                Py_ssize_t k, const uint8_t *dead) {
    if (heap_greater(hd[0], hr[0], d, row) && !(dead && dead[row]))
        heap_replace_top(hd, hr, k, d, row);
}

/*
 * Scan rows [r0, r1) for one query.  Distances of eight rows are computed
 * branch-free and only their minimum is compared with the heap's worst, so
 * the common case (nothing qualifies) costs one well-predicted branch per
 * eight rows.  Rows are visited in increasing order and must beat the worst
 * strictly, so among equal distances the earlier row wins: the tie order is
 * the row order.  W is a compile-time constant where it matters (see
 * scan_block), which lets the compiler unroll the word loop.
 */
static inline HOT void scan_rows(const uint64_t *db, Py_ssize_t w, Py_ssize_t r0,
                                 Py_ssize_t r1, const uint64_t *q, int32_t *hd,
                                 int64_t *hr, Py_ssize_t k, const uint8_t *dead) {
    Py_ssize_t i = r0;
    int32_t worst = hd[0];
    uint64_t ql[16];
    if (w <= 16) {
        memcpy(ql, q, (size_t)w * 8);
        q = ql;
    }
    for (; i + 8 <= r1; i += 8) {
        const uint64_t *p = db + i * w;
        int32_t d0 = hamming(p, q, w), d1 = hamming(p + w, q, w);
        int32_t d2 = hamming(p + 2 * w, q, w), d3 = hamming(p + 3 * w, q, w);
        int32_t d4 = hamming(p + 4 * w, q, w), d5 = hamming(p + 5 * w, q, w);
        int32_t d6 = hamming(p + 6 * w, q, w), d7 = hamming(p + 7 * w, q, w);
        int32_t m01 = d0 < d1 ? d0 : d1, m23 = d2 < d3 ? d2 : d3;
        int32_t m45 = d4 < d5 ? d4 : d5, m67 = d6 < d7 ? d6 : d7;
        int32_t m03 = m01 < m23 ? m01 : m23, m47 = m45 < m67 ? m45 : m67;
        if ((m03 < m47 ? m03 : m47) < worst) {
            consider(d0, i, hd, hr, k, dead);
            consider(d1, i + 1, hd, hr, k, dead);
            consider(d2, i + 2, hd, hr, k, dead);
            consider(d3, i + 3, hd, hr, k, dead);
            consider(d4, i + 4, hd, hr, k, dead);
            consider(d5, i + 5, hd, hr, k, dead);
            consider(d6, i + 6, hd, hr, k, dead);
            consider(d7, i + 7, hd, hr, k, dead);
            worst = hd[0];
        }
    }
    for (; i < r1; i++) consider(hamming(db + i * w, q, w), i, hd, hr, k, dead);
}


#ifdef HAVE_AVX2_PATH
/*
 * AVX2 versions for the common code sizes (up to 64 and up to 128 bits):
 * popcount by nibble lookup (vpshufb) and byte sums (vpsadbw), four or
 * eight rows per step, and one test of "any row below the worst" per step.
 * They return the same rows in the same order as scan_rows.
 */
#define AVX2 __attribute__((target("avx2,popcnt")))

static inline AVX2 __m256i popcount_lanes(__m256i x) {
    const __m256i lut = _mm256_setr_epi8(0, 1, 1, 2, 1, 2, 2, 3, 1, 2, 2, 3, 2, 3, 3, 4,
                                         0, 1, 1, 2, 1, 2, 2, 3, 1, 2, 2, 3, 2, 3, 3, 4);
    const __m256i nib = _mm256_set1_epi8(0x0f);
    __m256i lo = _mm256_shuffle_epi8(lut, _mm256_and_si256(x, nib));
    __m256i hi = _mm256_shuffle_epi8(lut, _mm256_and_si256(_mm256_srli_epi16(x, 4), nib));
    return _mm256_sad_epu8(_mm256_add_epi8(lo, hi), _mm256_setzero_si256());
}

/* Distances of rows i..i+7 to a one-word query: lanes of *lo hold rows 0-3, of *hi rows 4-7. */
static inline AVX2 void distances8_w1(const uint64_t *db, Py_ssize_t i, __m256i qv, __m256i *lo, __m256i *hi) {
    _mm_prefetch((const char *)(db + i + 128), _MM_HINT_T0);
    *lo = popcount_lanes(_mm256_xor_si256(_mm256_loadu_si256((const __m256i *)(db + i)), qv));
    *hi = popcount_lanes(_mm256_xor_si256(_mm256_loadu_si256((const __m256i *)(db + i + 4)), qv));
}

/* A two-word query repeated across the vector (q0, q1, q0, q1), as distances8_w2 takes it. */
static inline AVX2 __m256i query_w2_avx2(const uint64_t *q) {
    return _mm256_broadcastsi128_si256(_mm_loadu_si128((const __m128i *)q));
}

/* The same for two-word rows (qv from query_w2_avx2): lanes hold rows (0, 2, 1, 3) and (4, 6, 5, 7). */
static inline AVX2 void distances8_w2(const uint64_t *db, Py_ssize_t i, __m256i qv, __m256i *lo, __m256i *hi) {
    const __m256i *p = (const __m256i *)(db + 2 * i);
    _mm_prefetch((const char *)(db + 2 * i + 256), _MM_HINT_T0);
    _mm_prefetch((const char *)(db + 2 * i + 264), _MM_HINT_T0);
    /* each vector holds two rows of two words; lane sums are per word */
    __m256i a = popcount_lanes(_mm256_xor_si256(_mm256_loadu_si256(p), qv));
    __m256i b = popcount_lanes(_mm256_xor_si256(_mm256_loadu_si256(p + 1), qv));
    __m256i c = popcount_lanes(_mm256_xor_si256(_mm256_loadu_si256(p + 2), qv));
    __m256i e = popcount_lanes(_mm256_xor_si256(_mm256_loadu_si256(p + 3), qv));
    *lo = _mm256_add_epi64(_mm256_unpacklo_epi64(a, b), _mm256_unpackhi_epi64(a, b));
    *hi = _mm256_add_epi64(_mm256_unpacklo_epi64(c, e), _mm256_unpackhi_epi64(c, e));
}

static AVX2 void scan_rows_w1_avx2(const uint64_t *db, Py_ssize_t r0, Py_ssize_t r1,
                                   const uint64_t *q, int32_t *hd, int64_t *hr,
                                   Py_ssize_t k, const uint8_t *dead) {
    const __m256i qv = _mm256_set1_epi64x((long long)q[0]);
    __m256i worst = _mm256_set1_epi64x(hd[0]);
    int64_t d[8];
    Py_ssize_t i = r0;
    for (; i + 8 <= r1; i += 8) {
        __m256i a, b;
        distances8_w1(db, i, qv, &a, &b);
        __m256i below = _mm256_or_si256(_mm256_cmpgt_epi64(worst, a), _mm256_cmpgt_epi64(worst, b));
        if (!_mm256_testz_si256(below, below)) {
            _mm256_storeu_si256((__m256i *)d, a);
            _mm256_storeu_si256((__m256i *)(d + 4), b);
            for (int j = 0; j < 8; j++) consider((int32_t)d[j], i + j, hd, hr, k, dead);
            worst = _mm256_set1_epi64x(hd[0]);
        }
    }
    for (; i < r1; i++) consider(__builtin_popcountll(db[i] ^ q[0]), i, hd, hr, k, dead);
}

static AVX2 void scan_rows_w2_avx2(const uint64_t *db, Py_ssize_t r0, Py_ssize_t r1,
                                   const uint64_t *q, int32_t *hd, int64_t *hr,
                                   Py_ssize_t k, const uint8_t *dead) {
    const __m256i qv = query_w2_avx2(q);
    __m256i worst = _mm256_set1_epi64x(hd[0]);
    int64_t d[8];
    Py_ssize_t i = r0;
    for (; i + 8 <= r1; i += 8) {
        __m256i ab, ce; /* rows (0, 2, 1, 3) and (4, 6, 5, 7) */
        distances8_w2(db, i, qv, &ab, &ce);
        __m256i below = _mm256_or_si256(_mm256_cmpgt_epi64(worst, ab), _mm256_cmpgt_epi64(worst, ce));
        if (!_mm256_testz_si256(below, below)) {
            static const int order[8] = {0, 2, 1, 3, 4, 6, 5, 7};
            _mm256_storeu_si256((__m256i *)d, ab);
            _mm256_storeu_si256((__m256i *)(d + 4), ce);
            for (int j = 0; j < 8; j++) consider((int32_t)d[j], i + order[j], hd, hr, k, dead);
            worst = _mm256_set1_epi64x(hd[0]);
        }
    }
    for (; i < r1; i++) consider(hamming(db + 2 * i, q, 2), i, hd, hr, k, dead);
}


/*
 * AVX-512 versions (VPOPCNTDQ: a popcount instruction per 64-bit lane), where
 * the CPU has it: sixteen rows a step, one mask test per step.
 */
#define AVX512 __attribute__((target("avx512f,avx512vpopcntdq,popcnt")))

/* Distances of rows i..i+15 to a one-word query: lanes of *lo hold rows 0-7, of *hi rows 8-15. */
static inline AVX512 void distances16_w1(const uint64_t *db, Py_ssize_t i, __m512i qv, __m512i *lo, __m512i *hi) {
    _mm_prefetch((const char *)(db + i + 128), _MM_HINT_T0);
    _mm_prefetch((const char *)(db + i + 136), _MM_HINT_T0);
    *lo = _mm512_popcnt_epi64(_mm512_xor_si512(_mm512_loadu_si512(db + i), qv));
    *hi = _mm512_popcnt_epi64(_mm512_xor_si512(_mm512_loadu_si512(db + i + 8), qv));
}

/* A two-word query repeated across the vector (q0, q1, q0, q1, ...), as distances16_w2 takes it. */
static inline AVX512 __m512i query_w2_avx512(const uint64_t *q) {
    return _mm512_broadcast_i32x4(_mm_loadu_si128((const __m128i *)q));
}

/* The same for two-word rows (qv from query_w2_avx512): lanes hold rows (0, 4, 1, 5, 2, 6, 3, 7) and (8, 12, ...). */
static inline AVX512 void distances16_w2(const uint64_t *db, Py_ssize_t i, __m512i qv, __m512i *lo, __m512i *hi) {
    const uint64_t *p = db + 2 * i;
    _mm_prefetch((const char *)(p + 256), _MM_HINT_T0);
    _mm_prefetch((const char *)(p + 264), _MM_HINT_T0);
    _mm_prefetch((const char *)(p + 272), _MM_HINT_T0);
    _mm_prefetch((const char *)(p + 280), _MM_HINT_T0);
    /* each vector holds four rows of two words; lane counts are per word */
    __m512i a = _mm512_popcnt_epi64(_mm512_xor_si512(_mm512_loadu_si512(p), qv));
    __m512i b = _mm512_popcnt_epi64(_mm512_xor_si512(_mm512_loadu_si512(p + 8), qv));
    __m512i c = _mm512_popcnt_epi64(_mm512_xor_si512(_mm512_loadu_si512(p + 16), qv));
    __m512i e = _mm512_popcnt_epi64(_mm512_xor_si512(_mm512_loadu_si512(p + 24), qv));
    *lo = _mm512_add_epi64(_mm512_unpacklo_epi64(a, b), _mm512_unpackhi_epi64(a, b));
    *hi = _mm512_add_epi64(_mm512_unpacklo_epi64(c, e), _mm512_unpackhi_epi64(c, e));
}

static AVX512 void scan_rows_w1_avx512(const uint64_t *db, Py_ssize_t r0, Py_ssize_t r1,
                                       const uint64_t *q, int32_t *hd, int64_t *hr,
                                       Py_ssize_t k, const uint8_t *dead) {
    const __m512i qv = _mm512_set1_epi64((long long)q[0]);
    __m512i worst = _mm512_set1_epi64(hd[0]);
    int64_t d[16];
    Py_ssize_t i = r0;
    for (; i + 16 <= r1; i += 16) {
        __m512i a, b;
        distances16_w1(db, i, qv, &a, &b);
        if (_mm512_cmplt_epi64_mask(a, worst) | _mm512_cmplt_epi64_mask(b, worst)) {
            _mm512_storeu_si512(d, a);
            _mm512_storeu_si512(d + 8, b);
            for (int j = 0; j < 16; j++) consider((int32_t)d[j], i + j, hd, hr, k, dead);
            worst = _mm512_set1_epi64(hd[0]);
        }
    }
    for (; i < r1; i++) consider(__builtin_popcountll(db[i] ^ q[0]), i, hd, hr, k, dead);
}

static AVX512 void scan_rows_w2_avx512(const uint64_t *db, Py_ssize_t r0, Py_ssize_t r1,
                                       const uint64_t *q, int32_t *hd, int64_t *hr,
                                       Py_ssize_t k, const uint8_t *dead) {
    const __m512i qv = query_w2_avx512(q);
    __m512i worst = _mm512_set1_epi64(hd[0]);
    int64_t d[16];
    Py_ssize_t i = r0;
    for (; i + 16 <= r1; i += 16) {
        __m512i ab, ce;
        distances16_w2(db, i, qv, &ab, &ce);
        if (_mm512_cmplt_epi64_mask(ab, worst) | _mm512_cmplt_epi64_mask(ce, worst)) {
            static const int order[16] = {0, 4, 1, 5, 2, 6, 3, 7, 8, 12, 9, 13, 10, 14, 11, 15};
            _mm512_storeu_si512(d, ab);
            _mm512_storeu_si512(d + 8, ce);
            for (int j = 0; j < 16; j++) consider((int32_t)d[j], i + order[j], hd, hr, k, dead);
            worst = _mm512_set1_epi64(hd[0]);
        }
    }
    for (; i < r1; i++) consider(hamming(db + 2 * i, q, 2), i, hd, hr, k, dead);
}

static int use_avx2 = 0, use_avx512 = 0;
#endif

static HOT void scan_block(const uint64_t *db, Py_ssize_t w, Py_ssize_t r0, Py_ssize_t r1,
                           const uint64_t *q, int32_t *hd, int64_t *hr, Py_ssize_t k,
                           const uint8_t *dead) {
#ifdef HAVE_AVX2_PATH
    if (use_avx512 && w == 1) return scan_rows_w1_avx512(db, r0, r1, q, hd, hr, k, dead);
    if (use_avx512 && w == 2) return scan_rows_w2_avx512(db, r0, r1, q, hd, hr, k, dead);
    if (use_avx2 && w == 1) return scan_rows_w1_avx2(db, r0, r1, q, hd, hr, k, dead);
    if (use_avx2 && w == 2) return scan_rows_w2_avx2(db, r0, r1, q, hd, hr, k, dead);
#endif
    switch (w) {
        case 1: scan_rows(db, 1, r0, r1, q, hd, hr, k, dead); break;
        case 2: scan_rows(db, 2, r0, r1, q, hd, hr, k, dead); break;
        case 3: scan_rows(db, 3, r0, r1, q, hd, hr, k, dead); break;
        case 4: scan_rows(db, 4, r0, r1, q, hd, hr, k, dead); break;
        default: scan_rows(db, w, r0, r1, q, hd, hr, k, dead); break;
    }
}

/* Rows per block of a batch scan: a block stays in L2 while every query passes over it. */
static Py_ssize_t block_rows(Py_ssize_t w) {
    Py_ssize_t block = (256 * 1024) / (8 * w);
    return block < 64 ? 64 : block;
}

/* Threads worth starting for a scan of n rows of w words for nq queries: each gets
 * at least 2 MiB of codes to compare (over all queries), far more work than
 * starting a thread costs. */
static int row_threads(int threads, Py_ssize_t n, Py_ssize_t w, Py_ssize_t nq) {
    const Py_ssize_t min_words = 262144;
    Py_ssize_t work = n * w * (nq > 0 ? nq : 1), worth = work / min_words;
    if (threads > MAX_THREADS) threads = MAX_THREADS;
    if (worth < threads) threads = (int)worth;
    if (n < threads) threads = (int)n;
    return threads < 1 ? 1 : threads;
}

/*
 * One call's jobs and who has claimed them.  Threads claim jobs as they get to
 * them, so a helper that starts late (waking an idle core can take longer than
 * a short scan, notably on virtual machines) leaves its job to the caller
 * instead of delaying it.  Whichever thread lets go last frees it, so nobody
 * waits for a helper that never found work.
 */
typedef struct {
    void *(*fn)(void *);
    char *jobs;
    size_t size;
    int count;
    atomic_int next;    /* the next unclaimed job */
    atomic_int holders; /* the caller and the helpers not yet finished with this */
    int done;           /* jobs finished, under lock */
    pthread_mutex_t lock;
    pthread_cond_t all_done;
} work_t;

static void work_release(work_t *work) {
    if (atomic_fetch_sub(&work->holders, 1) == 1) {
        pthread_mutex_destroy(&work->lock);
        pthread_cond_destroy(&work->all_done);
        free(work);
    }
}

static void work_drain(work_t *work) {
    for (int j; (j = atomic_fetch_add(&work->next, 1)) < work->count;) {
        work->fn(work->jobs + (size_t)j * work->size);
        pthread_mutex_lock(&work->lock);
        if (++work->done == work->count) pthread_cond_signal(&work->all_done);
        pthread_mutex_unlock(&work->lock);
    }
}

static void *work_helper(void *arg) {
    work_drain(arg);
    work_release(arg);
    return NULL;
}

/* fn over jobs[0, threads) (`size` bytes each) on this thread and threads - 1 helpers;
 * returns once every job has run, whichever thread ran it. */
static void run_jobs(void *(*fn)(void *), void *jobs, size_t size, int threads) {
    work_t *work = threads > 1 ? malloc(sizeof *work) : NULL;
    if (!work) { /* one thread, or no memory to share the work: all of it here */
        for (int j = 0; j < threads; j++) fn((char *)jobs + (size_t)j * size);
        return;
    }
    *work = (work_t){.fn = fn, .jobs = jobs, .size = size, .count = threads};
    atomic_init(&work->next, 0);
    atomic_init(&work->holders, 1);
    pthread_mutex_init(&work->lock, NULL);
    pthread_cond_init(&work->all_done, NULL);
    pthread_attr_t attr;
    pthread_attr_init(&attr);
    pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
    for (int t = 1; t < threads; t++) {
        pthread_t tid;
        atomic_fetch_add(&work->holders, 1);
        if (pthread_create(&tid, &attr, work_helper, work) != 0) atomic_fetch_sub(&work->holders, 1);
    }
    pthread_attr_destroy(&attr);
    work_drain(work);
    pthread_mutex_lock(&work->lock);
    while (work->done < work->count) pthread_cond_wait(&work->all_done, &work->lock);
    pthread_mutex_unlock(&work->lock);
    work_release(work);
}

typedef struct {
    const uint64_t *db;
    const uint64_t *queries;
    const uint8_t *dead;
    Py_ssize_t w, nq, k, r0, r1;
    int32_t limit;
    int32_t *hd; /* nq * k */
    int64_t *hr;
} knn_job_t;

/*
 * Rows are visited in blocks that stay in L2 while every query of the batch
 * passes over them, so a batch reads the database from memory once.
 */
static void *knn_run(void *arg) {
    knn_job_t *job = (knn_job_t *)arg;
    const Py_ssize_t w = job->w, k = job->k, block = block_rows(w);
    for (Py_ssize_t i = 0; i < job->nq * k; i++) {
        job->hd[i] = job->limit;
        job->hr[i] = -1;
    }
    for (Py_ssize_t b0 = job->r0; b0 < job->r1; b0 += block) {
        Py_ssize_t b1 = b0 + block < job->r1 ? b0 + block : job->r1;
        for (Py_ssize_t qi = 0; qi < job->nq; qi++) {
            scan_block(job->db, w, b0, b1, job->queries + qi * w, job->hd + qi * k,
                       job->hr + qi * k, k, job->dead);
        }
    }
    for (Py_ssize_t qi = 0; qi < job->nq; qi++) heap_sort(job->hd + qi * k, job->hr + qi * k, k);
    return NULL;
}

/* Merge the per-thread sorted lists of one query into the first k entries. */
static void merge_lists(knn_job_t *jobs, int nt, Py_ssize_t qi, Py_ssize_t k,
                        int32_t *out_d, int64_t *out_r) {
    Py_ssize_t pos[MAX_THREADS] = {0};
    for (Py_ssize_t o = 0; o < k; o++) {
        int best = -1;
        for (int t = 0; t < nt; t++) {
            if (pos[t] >= k) continue;
            Py_ssize_t at = qi * k + pos[t];
            if (best < 0) {
                best = t;
                continue;
            }
            Py_ssize_t bt = qi * k + pos[best];
            /* unused slots (row -1) sort last */
            int64_t ra = jobs[t].hr[at], rb = jobs[best].hr[bt];
            if (rb < 0 && ra >= 0) best = t;
            else if (ra >= 0 && heap_greater(jobs[best].hd[bt], rb, jobs[t].hd[at], ra)) best = t;
        }
        Py_ssize_t at = qi * k + pos[best]++;
        out_d[o] = jobs[best].hd[at];
        out_r[o] = jobs[best].hr[at];
    }
}

static PyObject *py_knn(PyObject *self, PyObject *args, PyObject *kw) {
    static char *names[] = {"db", "n", "words", "queries", "k", "limit",
                            "out_dist", "out_rows", "dead", "threads", NULL};
    PyObject *o_db, *o_q, *o_od, *o_or, *o_dead = Py_None;
    Py_ssize_t n, w, k;
    int limit, threads = 1;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "OnnOniOO|Oi", names, &o_db, &n, &w, &o_q, &k,
                                     &limit, &o_od, &o_or, &o_dead, &threads))
        return NULL;
    buf_t db = {0}, q = {0}, od = {0}, orow = {0}, dead = {0};
    PyObject *result = NULL;
    if (get_buf(o_db, &db, 0, 8, "db") < 0 || get_buf(o_q, &q, 0, 8, "queries") < 0 ||
        get_buf(o_od, &od, 1, 4, "out_dist") < 0 || get_buf(o_or, &orow, 1, 8, "out_rows") < 0)
        goto done;
    if (o_dead != Py_None && get_buf(o_dead, &dead, 0, 1, "dead") < 0) goto done;
    if (w < 1 || k < 1 || n < 0 || n * w > n_items(&db) || n_items(&q) % w != 0) {
        PyErr_SetString(PyExc_ValueError, "knn: inconsistent sizes");
        goto done;
    }
    Py_ssize_t nq = n_items(&q) / w;
    if (n_items(&od) < nq * k || n_items(&orow) < nq * k || (dead.held && n_items(&dead) < n)) {
        PyErr_SetString(PyExc_ValueError, "knn: output or mask too small");
        goto done;
    }
    threads = row_threads(threads, n, w, nq);

    knn_job_t jobs[MAX_THREADS];
    int ok = 1;
    Py_BEGIN_ALLOW_THREADS;
    for (int t = 0; t < threads; t++) {
        jobs[t] = (knn_job_t){.db = db.view.buf, .queries = q.view.buf,
                              .dead = dead.held ? dead.view.buf : NULL, .w = w, .nq = nq, .k = k,
                              .r0 = n * t / threads, .r1 = n * (t + 1) / threads, .limit = limit};
        if (threads == 1) {
            jobs[t].hd = od.view.buf;
            jobs[t].hr = orow.view.buf;
        } else {
            jobs[t].hd = malloc(sizeof(int32_t) * nq * k);
            jobs[t].hr = malloc(sizeof(int64_t) * nq * k);
            if (!jobs[t].hd || !jobs[t].hr) ok = 0;
        }
    }
    if (ok && threads == 1) {
        knn_run(&jobs[0]);
    } else if (ok) {
        run_jobs(knn_run, jobs, sizeof jobs[0], threads);
        for (Py_ssize_t qi = 0; qi < nq; qi++)
            merge_lists(jobs, threads, qi, k, (int32_t *)od.view.buf + qi * k,
                        (int64_t *)orow.view.buf + qi * k);
    }
    if (threads > 1) {
        for (int t = 0; t < threads; t++) {
            free(jobs[t].hd);
            free(jobs[t].hr);
        }
    }
    Py_END_ALLOW_THREADS;
    if (!ok) {
        PyErr_NoMemory();
        goto done;
    }
    result = Py_NewRef(Py_None);
done:
    release(&db); release(&q); release(&od); release(&orow); release(&dead);
    return result;
}

/* ------------------------------------------------------------------ */
/* radius queries                                                      */

/* The rows of one query within the radius that one thread found, in row order. */
typedef struct {
    int64_t *rows;
    int32_t *dist;
    Py_ssize_t len, cap;
    int oom;
} hits_t;

static void hits_push(hits_t *h, int64_t row, int32_t d) {
    if (h->oom) return;
    if (h->len == h->cap) {
        Py_ssize_t cap = h->cap ? 2 * h->cap : 64;
        int64_t *rows = realloc(h->rows, sizeof(int64_t) * cap);
        if (rows) h->rows = rows;
        int32_t *dist = rows ? realloc(h->dist, sizeof(int32_t) * cap) : NULL;
        if (dist) h->dist = dist;
        if (!rows || !dist) {
            h->oom = 1;
            return;
        }
        h->cap = cap;
    }
    h->rows[h->len] = row;
    h->dist[h->len] = d;
    h->len++;
}

static inline HOT void take(int32_t d, int64_t row, int32_t radius, hits_t *h, const uint8_t *dead) {
    if (d <= radius && !(dead && dead[row])) hits_push(h, row, d);
}

static inline HOT void range_rows(const uint64_t *db, Py_ssize_t w, Py_ssize_t r0, Py_ssize_t r1,
                                  const uint64_t *q, int32_t radius, hits_t *h, const uint8_t *dead) {
    for (Py_ssize_t i = r0; i < r1; i++) take(hamming(db + i * w, q, w), i, radius, h, dead);
}

#ifdef HAVE_AVX2_PATH
/*
 * The vector radius scans test eight (AVX2) or sixteen (AVX-512) rows a step
 * against the radius and look at rows one by one only where some passed.
 */
static inline AVX2 unsigned lanes_set(__m256i x) {
    return (unsigned)_mm256_movemask_pd(_mm256_castsi256_pd(x));
}

/* Bit b of mask set: row i + b is within the radius; taken in row order. */
static inline HOT void take_masked(unsigned mask, const uint64_t *db, Py_ssize_t w, Py_ssize_t i,
                                   const uint64_t *q, hits_t *h, const uint8_t *dead) {
    while (mask) {
        Py_ssize_t row = i + __builtin_ctz(mask);
        mask &= mask - 1;
        if (!(dead && dead[row])) hits_push(h, row, hamming(db + row * w, q, w));
    }
}

static AVX2 void range_rows_w1_avx2(const uint64_t *db, Py_ssize_t r0, Py_ssize_t r1, const uint64_t *q,
                                    int32_t radius, hits_t *h, const uint8_t *dead) {
    const __m256i qv = _mm256_set1_epi64x((long long)q[0]);
    const __m256i bound = _mm256_set1_epi64x(radius + 1);
    Py_ssize_t i = r0;
    for (; i + 8 <= r1; i += 8) {
        __m256i a, b;
        distances8_w1(db, i, qv, &a, &b);
        unsigned mask = lanes_set(_mm256_cmpgt_epi64(bound, a)) | lanes_set(_mm256_cmpgt_epi64(bound, b)) << 4;
        if (mask) take_masked(mask, db, 1, i, q, h, dead);
    }
    range_rows(db, 1, i, r1, q, radius, h, dead);
}

static AVX2 void range_rows_w2_avx2(const uint64_t *db, Py_ssize_t r0, Py_ssize_t r1, const uint64_t *q,
                                    int32_t radius, hits_t *h, const uint8_t *dead) {
    const __m256i qv = query_w2_avx2(q);
    const __m256i bound = _mm256_set1_epi64x(radius + 1);
    Py_ssize_t i = r0;
    for (; i + 8 <= r1; i += 8) {
        __m256i ab, ce; /* rows (0, 2, 1, 3) and (4, 6, 5, 7) */
        distances8_w2(db, i, qv, &ab, &ce);
        unsigned lanes = lanes_set(_mm256_cmpgt_epi64(bound, ab)) | lanes_set(_mm256_cmpgt_epi64(bound, ce)) << 4;
        /* swap bits 1 and 2 of each nibble: lane order to row order */
        if (lanes) take_masked((lanes & 0x99) | (lanes & 0x22) << 1 | (lanes & 0x44) >> 1, db, 2, i, q, h, dead);
    }
    range_rows(db, 2, i, r1, q, radius, h, dead);
}

static AVX512 void range_rows_w1_avx512(const uint64_t *db, Py_ssize_t r0, Py_ssize_t r1, const uint64_t *q,
                                        int32_t radius, hits_t *h, const uint8_t *dead) {
    const __m512i qv = _mm512_set1_epi64((long long)q[0]);
    const __m512i bound = _mm512_set1_epi64(radius);
    Py_ssize_t i = r0;
    for (; i + 16 <= r1; i += 16) {
        __m512i a, b;
        distances16_w1(db, i, qv, &a, &b);
        unsigned mask = _mm512_cmple_epi64_mask(a, bound) | (unsigned)_mm512_cmple_epi64_mask(b, bound) << 8;
        if (mask) take_masked(mask, db, 1, i, q, h, dead);
    }
    range_rows(db, 1, i, r1, q, radius, h, dead);
}

/* Lanes (0, 4, 1, 5, 2, 6, 3, 7) of distances16_w2 to rows 0-7: even bits to the low nibble, odd to the high. */
static inline unsigned lanes_to_rows8(unsigned lanes) {
    unsigned even = lanes & 0x55, odd = (lanes >> 1) & 0x55;
    even = (even | even >> 1) & 0x33;
    even = (even | even >> 2) & 0x0f;
    odd = (odd | odd >> 1) & 0x33;
    odd = (odd | odd >> 2) & 0x0f;
    return even | odd << 4;
}

static AVX512 void range_rows_w2_avx512(const uint64_t *db, Py_ssize_t r0, Py_ssize_t r1, const uint64_t *q,
                                        int32_t radius, hits_t *h, const uint8_t *dead) {
    const __m512i qv = query_w2_avx512(q);
    const __m512i bound = _mm512_set1_epi64(radius);
    Py_ssize_t i = r0;
    for (; i + 16 <= r1; i += 16) {
        __m512i ab, ce;
        distances16_w2(db, i, qv, &ab, &ce);
        unsigned lo = _mm512_cmple_epi64_mask(ab, bound), hi = _mm512_cmple_epi64_mask(ce, bound);
        if (lo | hi) take_masked(lanes_to_rows8(lo) | lanes_to_rows8(hi) << 8, db, 2, i, q, h, dead);
    }
    range_rows(db, 2, i, r1, q, radius, h, dead);
}
#endif

static HOT void range_block(const uint64_t *db, Py_ssize_t w, Py_ssize_t r0, Py_ssize_t r1, const uint64_t *q,
                            int32_t radius, hits_t *h, const uint8_t *dead) {
#ifdef HAVE_AVX2_PATH
    if (use_avx512 && w == 1) return range_rows_w1_avx512(db, r0, r1, q, radius, h, dead);
    if (use_avx512 && w == 2) return range_rows_w2_avx512(db, r0, r1, q, radius, h, dead);
    if (use_avx2 && w == 1) return range_rows_w1_avx2(db, r0, r1, q, radius, h, dead);
    if (use_avx2 && w == 2) return range_rows_w2_avx2(db, r0, r1, q, radius, h, dead);
#endif
    switch (w) {
        case 1: range_rows(db, 1, r0, r1, q, radius, h, dead); break;
        case 2: range_rows(db, 2, r0, r1, q, radius, h, dead); break;
        case 3: range_rows(db, 3, r0, r1, q, radius, h, dead); break;
        case 4: range_rows(db, 4, r0, r1, q, radius, h, dead); break;
        default: range_rows(db, w, r0, r1, q, radius, h, dead); break;
    }
}

typedef struct {
    const uint64_t *db;
    const uint64_t *queries;
    const uint8_t *dead;
    Py_ssize_t w, nq, r0, r1;
    int32_t radius;
    hits_t *hits; /* nq */
} range_job_t;

/* Blocks of rows as in knn_run, so a batch reads the database from memory once. */
static void *range_run(void *arg) {
    range_job_t *job = (range_job_t *)arg;
    const Py_ssize_t w = job->w, block = block_rows(w);
    for (Py_ssize_t b0 = job->r0; b0 < job->r1; b0 += block) {
        Py_ssize_t b1 = b0 + block < job->r1 ? b0 + block : job->r1;
        for (Py_ssize_t qi = 0; qi < job->nq; qi++)
            range_block(job->db, w, b0, b1, job->queries + qi * w, job->radius, job->hits + qi, job->dead);
    }
    return NULL;
}

/*
 * One query's hits from every thread, ascending (distance, row), the first
 * `keep` of them into out_*: a counting sort on the distance, stable over the
 * threads' lists, which are in row order and cover ascending row ranges.
 */
static void gather(const hits_t *hits, int threads, Py_ssize_t nq, int32_t radius, Py_ssize_t keep,
                   Py_ssize_t *first, int64_t *out_rows, int32_t *out_dist) {
    for (int32_t d = 0; d <= radius; d++) first[d] = 0;
    for (int t = 0; t < threads; t++)
        for (Py_ssize_t j = 0; j < hits[t * nq].len; j++) first[hits[t * nq].dist[j]]++;
    Py_ssize_t start = 0;
    for (int32_t d = 0; d <= radius; d++) {
        Py_ssize_t count = first[d];
        first[d] = start;
        start += count;
    }
    for (int t = 0; t < threads; t++) {
        const hits_t *h = &hits[t * nq];
        for (Py_ssize_t j = 0; j < h->len; j++) {
            Py_ssize_t at = first[h->dist[j]]++;
            if (at < keep) {
                out_rows[at] = h->rows[j];
                out_dist[at] = h->dist[j];
            }
        }
    }
}

static PyObject *py_range(PyObject *self, PyObject *args, PyObject *kw) {
    static char *names[] = {"db", "n", "words", "queries", "radius", "max_results", "dead", "threads", NULL};
    PyObject *o_db, *o_q, *o_dead = Py_None;
    Py_ssize_t n, w, max_results;
    int radius, threads = 1;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "OnnOin|Oi", names, &o_db, &n, &w, &o_q, &radius,
                                     &max_results, &o_dead, &threads))
        return NULL;
    buf_t db = {0}, q = {0}, dead = {0};
    PyObject *result = NULL, *o_lims = NULL, *o_rows = NULL, *o_dist = NULL;
    hits_t *hits = NULL;
    Py_ssize_t *first = NULL, nq = 0;
    if (get_buf(o_db, &db, 0, 8, "db") < 0 || get_buf(o_q, &q, 0, 8, "queries") < 0) goto done;
    if (o_dead != Py_None && get_buf(o_dead, &dead, 0, 1, "dead") < 0) goto done;
    if (w < 1 || n < 0 || n * w > n_items(&db) || n_items(&q) % w != 0 || radius < 0 || radius > 64 * w ||
        max_results < 0 || (dead.held && n_items(&dead) < n)) {
        PyErr_SetString(PyExc_ValueError, "range: inconsistent sizes");
        goto done;
    }
    nq = n_items(&q) / w;
    threads = row_threads(threads, n, w, nq);
    hits = calloc((size_t)(threads * nq) + 1, sizeof(hits_t));
    first = malloc(sizeof(Py_ssize_t) * (radius + 1));
    if (!hits || !first) {
        PyErr_NoMemory();
        goto done;
    }
    range_job_t jobs[MAX_THREADS];
    for (int t = 0; t < threads; t++)
        jobs[t] = (range_job_t){.db = db.view.buf, .queries = q.view.buf, .dead = dead.held ? dead.view.buf : NULL,
                                .w = w, .nq = nq, .r0 = n * t / threads, .r1 = n * (t + 1) / threads,
                                .radius = radius, .hits = hits + t * nq};
    Py_BEGIN_ALLOW_THREADS;
    run_jobs(range_run, jobs, sizeof jobs[0], threads);
    Py_END_ALLOW_THREADS;
    o_lims = PyByteArray_FromStringAndSize(NULL, (Py_ssize_t)sizeof(int64_t) * (nq + 1));
    if (!o_lims) goto done;
    int64_t *lims = (int64_t *)PyByteArray_AS_STRING(o_lims);
    lims[0] = 0;
    for (Py_ssize_t qi = 0; qi < nq; qi++) {
        Py_ssize_t found = 0;
        for (int t = 0; t < threads; t++) {
            if (hits[t * nq + qi].oom) {
                PyErr_NoMemory();
                goto done;
            }
            found += hits[t * nq + qi].len;
        }
        lims[qi + 1] = lims[qi] + (found < max_results ? found : max_results);
    }
    o_rows = PyByteArray_FromStringAndSize(NULL, (Py_ssize_t)sizeof(int64_t) * lims[nq]);
    o_dist = PyByteArray_FromStringAndSize(NULL, (Py_ssize_t)sizeof(int32_t) * lims[nq]);
    if (!o_rows || !o_dist) goto done;
    /* fresh bytearrays (numpy views of them are writable) that nothing else sees yet: filled without the GIL */
    int64_t *rows = (int64_t *)PyByteArray_AS_STRING(o_rows);
    int32_t *dist = (int32_t *)PyByteArray_AS_STRING(o_dist);
    Py_BEGIN_ALLOW_THREADS;
    for (Py_ssize_t qi = 0; qi < nq; qi++)
        gather(hits + qi, threads, nq, radius, lims[qi + 1] - lims[qi], first, rows + lims[qi], dist + lims[qi]);
    Py_END_ALLOW_THREADS;
    result = PyTuple_Pack(3, o_lims, o_rows, o_dist);
done:
    if (hits) {
        for (Py_ssize_t i = 0; i < threads * nq; i++) {
            free(hits[i].rows);
            free(hits[i].dist);
        }
    }
    free(hits);
    free(first);
    Py_XDECREF(o_lims); Py_XDECREF(o_rows); Py_XDECREF(o_dist);
    release(&db); release(&q); release(&dead);
    return result;
}

/* ------------------------------------------------------------------ */
/* id table                                                            */
/*
 * Slots hold (high 32 bits of the id's hash) << 32 | (row + 1); 0 is empty.
 * Linear probing with backward-shift deletion, so there are no tombstones.
 * Ids live in a byte blob (starts/lens per row), owned by Python.
 */

static inline uint64_t hash_id(const uint8_t *p, Py_ssize_t n) {
    uint64_t h = 1469598103934665603ULL;
    for (Py_ssize_t i = 0; i < n; i++) {
        h ^= p[i];
        h *= 1099511628211ULL;
    }
    h ^= h >> 33;
    h *= 0xff51afd7ed558ccdULL;
    h ^= h >> 33;
    h *= 0xc4ceb9fe1a85ec53ULL;
    h ^= h >> 33;
    return h;
}

typedef struct {
    uint64_t *slots;
    Py_ssize_t mask;
    const uint8_t *blob;
    const int64_t *starts;
    const int32_t *lens;
} idtab_t;

static inline int row_matches(const idtab_t *t, int64_t row, const uint8_t *p, Py_ssize_t n) {
    return t->lens[row] == n && memcmp(t->blob + t->starts[row], p, (size_t)n) == 0;
}

/* Returns the slot holding the id, or -(first empty slot) - 1. */
static Py_ssize_t idtab_probe(const idtab_t *t, const uint8_t *p, Py_ssize_t n, uint64_t h) {
    uint64_t tag = h & 0xFFFFFFFF00000000ULL;
    Py_ssize_t s = (Py_ssize_t)(h & (uint64_t)t->mask);
    for (;;) {
        uint64_t e = t->slots[s];
        if (e == 0) return -s - 1;
        if ((e & 0xFFFFFFFF00000000ULL) == tag &&
            row_matches(t, (int64_t)(e & 0xFFFFFFFFULL) - 1, p, n))
            return s;
        s = (s + 1) & t->mask;
    }
}

static void idtab_delete_slot(idtab_t *t, Py_ssize_t hole) {
    Py_ssize_t s = hole;
    for (;;) {
        s = (s + 1) & t->mask;
        uint64_t e = t->slots[s];
        if (e == 0) break;
        int64_t row = (int64_t)(e & 0xFFFFFFFFULL) - 1;
        Py_ssize_t home = (Py_ssize_t)(hash_id(t->blob + t->starts[row], t->lens[row]) & (uint64_t)t->mask);
        /* move e into the hole unless its home lies cyclically in (hole, s] */
        int stays = hole <= s ? (home > hole && home <= s) : (home > hole || home <= s);
        if (!stays) {
            t->slots[hole] = e;
            hole = s;
        }
    }
    t->slots[hole] = 0;
}

/* Parse the table and the blob describing the rows' ids. */
static int idtab_open(PyObject *o_slots, PyObject *o_blob, PyObject *o_starts, PyObject *o_lens,
                      buf_t *bs, buf_t *bb, buf_t *bst, buf_t *bl, idtab_t *t) {
    if (get_buf(o_slots, bs, 1, 8, "slots") < 0 || get_buf(o_blob, bb, 0, 1, "blob") < 0 ||
        get_buf(o_starts, bst, 0, 8, "starts") < 0 || get_buf(o_lens, bl, 0, 4, "lens") < 0)
        return -1;
    Py_ssize_t m = n_items(bs);
    if (m < 2 || (m & (m - 1)) != 0 || n_items(bst) != n_items(bl)) {
        PyErr_SetString(PyExc_ValueError, "id table: slots must be a power of two; starts/lens must match");
        return -1;
    }
    *t = (idtab_t){bs->view.buf, m - 1, bb->view.buf, bst->view.buf, bl->view.buf};
    return 0;
}

/*
 * lookup(slots, blob, starts, lens, qblob, qstarts, qlens, out_rows):
 * out_rows[i] = row of query id i, or -1.
 */
static PyObject *py_id_lookup(PyObject *self, PyObject *args) {
    PyObject *a[8];
    if (!PyArg_ParseTuple(args, "OOOOOOOO", &a[0], &a[1], &a[2], &a[3], &a[4], &a[5], &a[6], &a[7]))
        return NULL;
    buf_t bs = {0}, bb = {0}, bst = {0}, bl = {0}, qb = {0}, qs = {0}, ql = {0}, out = {0};
    idtab_t t;
    PyObject *result = NULL;
    if (idtab_open(a[0], a[1], a[2], a[3], &bs, &bb, &bst, &bl, &t) < 0) goto done;
    if (get_buf(a[4], &qb, 0, 1, "qblob") < 0 || get_buf(a[5], &qs, 0, 8, "qstarts") < 0 ||
        get_buf(a[6], &ql, 0, 4, "qlens") < 0 || get_buf(a[7], &out, 1, 8, "out") < 0)
        goto done;
    Py_ssize_t nq = n_items(&qs);
    if (n_items(&ql) != nq || n_items(&out) < nq) {
        PyErr_SetString(PyExc_ValueError, "id lookup: inconsistent sizes");
        goto done;
    }
    const uint8_t *qblob = qb.view.buf;
    const int64_t *qstarts = qs.view.buf;
    const int32_t *qlens = ql.view.buf;
    int64_t *rows = out.view.buf;
    Py_BEGIN_ALLOW_THREADS;
    for (Py_ssize_t i = 0; i < nq; i++) {
        const uint8_t *p = qblob + qstarts[i];
        Py_ssize_t s = idtab_probe(&t, p, qlens[i], hash_id(p, qlens[i]));
        rows[i] = s >= 0 ? (int64_t)(t.slots[s] & 0xFFFFFFFFULL) - 1 : -1;
    }
    Py_END_ALLOW_THREADS;
    result = Py_NewRef(Py_None);
done:
    release(&bs); release(&bb); release(&bst); release(&bl);
    release(&qb); release(&qs); release(&ql); release(&out);
    return result;
}

/*
 * Insert (the rows' ids are not in the table yet; the caller keeps the load
 * factor below 3/4) or remove the ids of the given rows.
 * Arguments: (slots, blob, starts, lens, rows).
 */
static PyObject *id_update(PyObject *args, int insert) {
    PyObject *a[5];
    if (!PyArg_ParseTuple(args, "OOOOO", &a[0], &a[1], &a[2], &a[3], &a[4])) return NULL;
    buf_t bs = {0}, bb = {0}, bst = {0}, bl = {0}, br = {0};
    idtab_t t;
    PyObject *result = NULL;
    if (idtab_open(a[0], a[1], a[2], a[3], &bs, &bb, &bst, &bl, &t) < 0) goto done;
    if (get_buf(a[4], &br, 0, 8, "rows") < 0) goto done;
    const int64_t *rows = br.view.buf;
    Py_ssize_t nr = n_items(&br), nrows = n_items(&bst);
    for (Py_ssize_t i = 0; i < nr; i++) {
        /* a slot stores row + 1 in 32 bits */
        if (rows[i] < 0 || rows[i] >= nrows || rows[i] >= 0xFFFFFFFFLL) {
            PyErr_SetString(PyExc_ValueError, "id table: row out of range");
            goto done;
        }
    }
    int duplicate = 0;
    Py_BEGIN_ALLOW_THREADS;
    for (Py_ssize_t i = 0; i < nr && !duplicate; i++) {
        const uint8_t *p = t.blob + t.starts[rows[i]];
        uint64_t h = hash_id(p, t.lens[rows[i]]);
        Py_ssize_t s = idtab_probe(&t, p, t.lens[rows[i]], h);
        if (!insert) {
            if (s >= 0) idtab_delete_slot(&t, s);
        } else if (s >= 0) {
            duplicate = 1;
        } else {
            t.slots[-s - 1] = (h & 0xFFFFFFFF00000000ULL) | (uint64_t)(rows[i] + 1);
        }
    }
    Py_END_ALLOW_THREADS;
    if (duplicate) {
        PyErr_SetString(PyExc_KeyError, "id insert: id already present");
        goto done;
    }
    result = Py_NewRef(Py_None);
done:
    release(&bs); release(&bb); release(&bst); release(&bl); release(&br);
    return result;
}

static PyObject *py_id_insert(PyObject *self, PyObject *args) { return id_update(args, 1); }

static PyObject *py_id_remove(PyObject *self, PyObject *args) { return id_update(args, 0); }

static PyMethodDef methods[] = {
    {"knn", (PyCFunction)(void (*)(void))py_knn, METH_VARARGS | METH_KEYWORDS,
     "knn(db, n, words, queries, k, limit, out_dist, out_rows, dead=None, threads=1)\n"
     "Exact top-k rows by Hamming distance, ascending (distance, row); unused slots get row -1."},
    {"range", (PyCFunction)(void (*)(void))py_range, METH_VARARGS | METH_KEYWORDS,
     "range(db, n, words, queries, radius, max_results, dead=None, threads=1) -> (lims, rows, dist) as bytes\n"
     "Every row within the radius of each query, ascending (distance, row), the first max_results of each."},
    {"id_lookup", py_id_lookup, METH_VARARGS,
     "id_lookup(slots, blob, starts, lens, qblob, qstarts, qlens, out_rows)"},
    {"id_insert", py_id_insert, METH_VARARGS, "id_insert(slots, blob, starts, lens, rows)"},
    {"id_remove", py_id_remove, METH_VARARGS, "id_remove(slots, blob, starts, lens, rows)"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_kernel",
                                    "Compiled core of the Hamming index.", -1, methods};

PyMODINIT_FUNC PyInit__kernel(void) {
    PyObject *m = PyModule_Create(&module);
    if (!m) return NULL;
    const char *path = "scalar";
    /* HAMMING_KERNEL=scalar|avx2|avx512 caps the path (tests check each one on any CPU that has it);
     * a misspelt cap must not quietly run the slowest scan. */
    const char *cap = getenv("HAMMING_KERNEL");
    if (cap != NULL && strcmp(cap, "scalar") != 0 && strcmp(cap, "avx2") != 0 && strcmp(cap, "avx512") != 0) {
        Py_DECREF(m);
        PyErr_Format(PyExc_ImportError, "HAMMING_KERNEL=%s: expected scalar, avx2 or avx512 (or unset for the best the CPU has)", cap);
        return NULL;
    }
#ifdef HAVE_AVX2_PATH
    int allow_avx2 = cap == NULL || strcmp(cap, "avx2") == 0 || strcmp(cap, "avx512") == 0;
    int allow_avx512 = cap == NULL || strcmp(cap, "avx512") == 0;
    __builtin_cpu_init();
    use_avx2 = allow_avx2 && __builtin_cpu_supports("avx2") && __builtin_cpu_supports("popcnt");
    use_avx512 = allow_avx512 && __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512vpopcntdq");
    if (use_avx2) path = "avx2";
    if (use_avx512) path = "avx512";
#endif
    if (PyModule_AddStringConstant(m, "simd", path) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
