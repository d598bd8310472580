#include "kb_cpu.h"

#if defined(__x86_64__)
#include <cpuid.h>
#if defined(__linux__)
#include <sys/syscall.h>
#include <unistd.h>
#endif

static unsigned long long xgetbv0(void) {
    unsigned eax, edx;
    __asm__ volatile("xgetbv" : "=a"(eax), "=d"(edx) : "c"(0));
    return ((unsigned long long)edx << 32) | eax;
}

#define BIT(r, n) (((r) >> (n)) & 1u)

unsigned kb_cpu_features(void) {
    unsigned a, b, c, d, out = 0;
    if (!__get_cpuid(1, &a, &b, &c, &d)) return 0;
    int fma = BIT(c, 12), osxsave = BIT(c, 27), avx = BIT(c, 28);
    if (!osxsave || !avx) return 0;
    unsigned long long xcr0 = xgetbv0();
    /* XMM and YMM state (bits 1, 2); opmask, ZMM_Hi256, Hi16_ZMM (5-7); XTILECFG/XTILEDATA (17, 18). */
    int osAVX = (xcr0 & 0x6) == 0x6, osAVX512 = osAVX && (xcr0 & 0xe0) == 0xe0;
    int osAMX = (xcr0 & 0x60000) == 0x60000;
    unsigned max = __get_cpuid_max(0, 0);
    if (max < 7 || !osAVX) return 0;
    unsigned b7, c7, d7, a71 = 0, dummy;
    __cpuid_count(7, 0, a, b7, c7, d7);
    if (a >= 1) __cpuid_count(7, 1, a71, dummy, dummy, dummy);
    if (BIT(b7, 5) && fma) out |= KB_CPU_AVX2;
    int avx512 = BIT(b7, 16) && BIT(b7, 17) && BIT(b7, 28) && BIT(b7, 30) && BIT(b7, 31);
    if (avx512 && osAVX512) {
        out |= KB_CPU_AVX512;
        if (BIT(c7, 11)) out |= KB_CPU_AVX512_VNNI;
        if (BIT(a71, 5)) out |= KB_CPU_AVX512_BF16;
        if (BIT(d7, 23)) out |= KB_CPU_AVX512_FP16;
    }
    if (BIT(d7, 24) && BIT(d7, 22) && osAMX) {
#if defined(__linux__)
        /* Linux hands out AMX tile state per process on request (kernel 5.16+). */
        enum { ARCH_REQ_XCOMP_PERM = 0x1023, XFEATURE_XTILEDATA = 18 };
        out |= syscall(SYS_arch_prctl, ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA) == 0 ? KB_CPU_AMX_BF16 : KB_CPU_AMX_DENIED;
#else
        out |= KB_CPU_AMX_BF16;
#endif
    }
    return out;
}
#else
unsigned kb_cpu_features(void) { return 0; }
#endif
