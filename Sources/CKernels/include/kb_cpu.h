#ifndef KB_CPU_H
#define KB_CPU_H

/* CPU features usable by this process: each bit is set only when the CPU has the
   instructions (cpuid) and the OS saves their registers (xgetbv); AMX also needs
   Linux's per-process permission, which kb_cpu_features requests. */
enum {
    KB_CPU_AVX2 = 1 << 0,        /* AVX2 and FMA */
    KB_CPU_AVX512 = 1 << 1,      /* AVX-512 F, CD, BW, DQ, VL (oneDNN's avx512_core) */
    KB_CPU_AVX512_VNNI = 1 << 2,
    KB_CPU_AVX512_BF16 = 1 << 3,
    KB_CPU_AVX512_FP16 = 1 << 4,
    KB_CPU_AMX_BF16 = 1 << 5,    /* AMX-TILE and AMX-BF16, tile data permitted by the OS */
    /* AMX in cpuid and XCR0 but the OS refused ARCH_REQ_XCOMP_PERM (old kernel). */
    KB_CPU_AMX_DENIED = 1 << 6,
};

unsigned kb_cpu_features(void);

#endif
