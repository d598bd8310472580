/* OpenBLAS vs oneDNN fp32 GEMM on one thread, timed in thread CPU time
   (CLOCK_THREAD_CPUTIME_ID), so that the rates hold on a loaded shared machine where
   `just bench gemm`'s wall-clock rates mostly measure the other processes. Each oneDNN
   call creates its stream and memory objects, as OneDNN.gemm does; runs alternate
   between the libraries. Shapes: the U-Net classes of Sources/KoalaBench/GemmBench.swift
   plus small tiles.

   gcc -O2 tools/bench/gemm_cpu_time.c -o /tmp/gemm_cpu_time -ldnnl -lgomp -lopenblas
   /tmp/gemm_cpu_time            (ONEDNN_VERBOSE=1 shows the kernels oneDNN picked) */
#include <oneapi/dnnl/dnnl.h>
#include <cblas.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

void openblas_set_num_threads(int);
char *openblas_get_corename(void);
void omp_set_num_threads(int);

typedef struct { int m, n, k, ta, tb; const char *what; } shape;
static const shape shapes[] = {
    {64, 64, 64, 0, 0, "small"}, {128, 128, 64, 0, 1, "small"}, {256, 256, 64, 0, 1, "small"},
    {256, 128, 256, 0, 0, "small"}, {1024, 64, 1024, 0, 0, "small"}, {512, 512, 256, 0, 0, "small"},
    {4096, 640, 640, 0, 1, "attention projections 32x32"}, {4096, 5120, 640, 0, 1, "GEGLU 32x32"},
    {4096, 640, 2560, 0, 1, "feed-forward out 32x32"}, {256, 1280, 1280, 0, 1, "attention projections 16x16"},
    {256, 10240, 1280, 0, 1, "GEGLU 16x16"}, {77, 1280, 2048, 0, 1, "cross-attention keys/values"},
    {1280, 256, 11520, 0, 0, "3x3 conv im2col 16x16"}, {640, 1024, 320, 0, 0, "1x1 shortcut conv"},
    {640, 640, 4096, 1, 0, "weight gradient"}, {512, 512, 64, 0, 1, "attention scores tile"},
    {512, 64, 512, 0, 0, "attention values tile"}, {320, 256, 320, 0, 0, "Winograd 320ch band"},
    {640, 128, 640, 0, 0, "Winograd 640ch band"}, {128, 256, 1920, 0, 0, "Winograd channel block"},
};

static double cpu_now(void) {
    struct timespec t;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t);
    return t.tv_sec + t.tv_nsec * 1e-9;
}

static void desc(dnnl_memory_desc_t *d, int rows, int cols, int ld, int transposed) {
    dnnl_dims_t dims = {rows, cols}, strides = {transposed ? 1 : ld, transposed ? ld : 1};
    if (dnnl_memory_desc_init_by_strides(d, 2, dims, dnnl_f32, strides) != dnnl_success) exit(1);
}

static int by_value(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

int main(void) {
    omp_set_num_threads(1);
    openblas_set_num_threads(1);
    dnnl_engine_t engine;
    if (dnnl_engine_create(&engine, dnnl_cpu, 0) != dnnl_success) return 1;
    printf("OpenBLAS core %s; GFLOP per CPU-second, median, one thread\n", openblas_get_corename());
    for (size_t i = 0; i < sizeof shapes / sizeof shapes[0]; i++) {
        shape s = shapes[i];
        int lda = s.ta ? s.m : s.k, ldb = s.tb ? s.k : s.n;
        float *A = malloc(sizeof(float) * s.m * s.k), *B = malloc(sizeof(float) * s.k * s.n),
              *C = malloc(sizeof(float) * s.m * s.n);
        for (long j = 0; j < (long)s.m * s.k; j++) A[j] = (float)(j % 7) * 0.1f;
        for (long j = 0; j < (long)s.k * s.n; j++) B[j] = (float)(j % 5) * 0.1f;
        dnnl_memory_desc_t a, b, c;
        desc(&a, s.m, s.k, lda, s.ta);
        desc(&b, s.k, s.n, ldb, s.tb);
        desc(&c, s.m, s.n, s.n, 0);
        dnnl_matmul_desc_t op;
        dnnl_matmul_desc_init(&op, &a, &b, NULL, &c);
        dnnl_primitive_desc_t pd;
        if (dnnl_primitive_desc_create(&pd, &op, NULL, engine, NULL) != dnnl_success) return 1;
        const char *impl = "?";
        dnnl_primitive_desc_query(pd, dnnl_query_impl_info_str, 0, &impl);
        dnnl_primitive_t p;
        dnnl_primitive_create(&p, pd);
        double flops = 2.0 * s.m * s.n * s.k, tb[64], td[64];
        int reps = flops > 2e9 ? 5 : flops > 2e8 ? 11 : 63;
        for (int r = -1; r < reps; r++) {
            double t0 = cpu_now();
            cblas_sgemm(CblasRowMajor, s.ta ? CblasTrans : CblasNoTrans, s.tb ? CblasTrans : CblasNoTrans,
                        s.m, s.n, s.k, 1, A, lda, B, ldb, 0, C, s.n);
            double t1 = cpu_now();
            dnnl_stream_t stream;
            dnnl_memory_t ma, mb, mc;
            dnnl_stream_create(&stream, engine, dnnl_stream_default_flags);
            dnnl_memory_create(&ma, &a, engine, A);
            dnnl_memory_create(&mb, &b, engine, B);
            dnnl_memory_create(&mc, &c, engine, C);
            dnnl_exec_arg_t args[3] = {{DNNL_ARG_SRC, ma}, {DNNL_ARG_WEIGHTS, mb}, {DNNL_ARG_DST, mc}};
            if (dnnl_primitive_execute(p, stream, 3, args) != dnnl_success) return 1;
            dnnl_memory_destroy(ma);
            dnnl_memory_destroy(mb);
            dnnl_memory_destroy(mc);
            dnnl_stream_destroy(stream);
            double t2 = cpu_now();
            if (r >= 0) { tb[r] = t1 - t0; td[r] = t2 - t1; }
        }
        qsort(tb, reps, sizeof(double), by_value);
        qsort(td, reps, sizeof(double), by_value);
        double ob = flops / tb[reps / 2] / 1e9, od = flops / td[reps / 2] / 1e9;
        printf("%5dx%5dx%5d %c%c %11.0f madds  OpenBLAS %5.1f  oneDNN %5.1f (%s) %+4.0f%%  %s\n", s.m, s.n, s.k,
               s.ta ? 't' : 'n', s.tb ? 't' : 'n', flops / 2, ob, od, impl, (od / ob - 1) * 100, s.what);
        dnnl_primitive_desc_destroy(pd);
        dnnl_primitive_destroy(p);
        free(A); free(B); free(C);
    }
    return 0;
}
