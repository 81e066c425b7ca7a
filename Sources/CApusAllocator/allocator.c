#include "apus_allocator.h"

#if defined(__GLIBC__)
#include <malloc.h>
#endif

void apus_tune_allocator(void) {
#if defined(__GLIBC__)
  mallopt(M_MMAP_THRESHOLD, 64 << 20);
  mallopt(M_TRIM_THRESHOLD, 512 << 20);
#endif
}
