#define _GNU_SOURCE
#include "apus_system.h"

#include <fcntl.h>
#include <signal.h>
#include <spawn.h>

#if defined(__GLIBC__)
#include <malloc.h>
#endif

// Blob chunks are ~1 MiB buffers allocated and freed at a high rate; by default glibc maps
// and unmaps each, paying page faults and page clears for every chunk, so large allocations
// come from the heap and freed memory is kept (apus_release_free_memory gives it back after
// clients leave). A constructor, so the settings hold before any thread allocates.
__attribute__((constructor)) static void apus_tune_allocator(void) {
#if defined(__GLIBC__)
  mallopt(M_MMAP_THRESHOLD, 64 << 20);
  // Up to 16 MiB free at the top of each arena stays mapped for the next burst; beyond that
  // glibc returns it when a large chunk is freed. This is the only way memory at the top of
  // a thread's arena goes back (malloc_trim returns free pages inside arenas, and the main
  // arena's top, but never shrinks another arena's heap).
  mallopt(M_TRIM_THRESHOLD, 16 << 20);
#endif
}

void apus_release_free_memory(void) {
#if defined(__GLIBC__)
  malloc_trim(0);
#endif
}

int apus_spawn(const char *path, char *const argv[], char *const envp[], const char *cwd,
               int stdout_fd, int stderr_fd, pid_t *pid) {
  posix_spawn_file_actions_t actions;
  posix_spawnattr_t attr;
  int rc = posix_spawn_file_actions_init(&actions);
  if (rc != 0) return rc;
  rc = posix_spawnattr_init(&attr);
  if (rc != 0) {
    posix_spawn_file_actions_destroy(&actions);
    return rc;
  }
  posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0);
  posix_spawn_file_actions_adddup2(&actions, stdout_fd, 1);
  posix_spawn_file_actions_adddup2(&actions, stderr_fd, 2);
  posix_spawn_file_actions_addchdir_np(&actions, cwd);
  sigset_t empty, all;
  sigemptyset(&empty);
  sigfillset(&all);
  posix_spawnattr_setsigmask(&attr, &empty);
  posix_spawnattr_setsigdefault(&attr, &all);
  // A process group of its own, so a timeout or kill reaches every process it started.
  posix_spawnattr_setpgroup(&attr, 0);
  posix_spawnattr_setflags(
      &attr, POSIX_SPAWN_SETPGROUP | POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF);
  rc = posix_spawn(pid, path, &actions, &attr, argv, envp);
  posix_spawnattr_destroy(&attr);
  posix_spawn_file_actions_destroy(&actions);
  return rc;
}
