#ifndef APUS_SYSTEM_H
#define APUS_SYSTEM_H

#include <sys/types.h>

/// Returns free heap memory (every arena, including pages inside the heap) to the OS.
/// No-op off glibc.
void apus_release_free_memory(void);

/// Starts `path` with `argv` and `envp` in a new process group, in directory `cwd`, with
/// stdin from /dev/null and stdout/stderr on the given descriptors; signal handling reset.
/// Returns 0 and sets `*pid`, or an errno value.
int apus_spawn(const char *path, char *const argv[], char *const envp[], const char *cwd,
               int stdout_fd, int stderr_fd, pid_t *pid);

#endif
