#ifndef APUS_ALLOCATOR_H
#define APUS_ALLOCATOR_H

/// Serves large (up to 64 MiB) allocations from the heap instead of fresh mmaps, and keeps
/// freed heap memory, so ~1 MiB blob chunks do not each pay page faults. No-op off glibc.
void apus_tune_allocator(void);

#endif
