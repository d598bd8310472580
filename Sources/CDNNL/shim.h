#include <oneapi/dnnl/dnnl.h>

/* Debian's oneDNN threads with libgomp. KoalaBooth runs it single-threaded on each of
   its own workers, which needs the per-thread OpenMP thread count; omp.h is GCC's and
   not on clang's include path, so the two functions are declared here. */
int omp_get_max_threads(void);
void omp_set_num_threads(int);
