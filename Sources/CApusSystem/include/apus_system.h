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

/// What an action may not see or do, applied in the child between fork and exec.
struct apus_isolation {
  /// Switch to `uid`/`gid` (no supplementary groups) when non-zero: the worker runs as root.
  int change_user;
  uid_t uid;
  gid_t gid;
  /// A mount namespace of its own in which each of `hide` (NULL-terminated) is covered: an
  /// empty read-only tmpfs over a directory, /dev/null over a file.
  const char *const *hide;
  /// A network namespace of its own with only its loopback interface, up.
  int no_network;
};

/// `apus_spawn` with `isolation` (NULL: none). Uses fork + exec, as posix_spawn cannot
/// enter namespaces or change user; the child makes only system calls. Returns 0 and sets
/// `*pid`, or the errno of the step that failed, with `*step` naming it.
int apus_spawn_isolated(const char *path, char *const argv[], char *const envp[], const char *cwd,
                        int stdout_fd, int stderr_fd, const struct apus_isolation *isolation,
                        pid_t *pid, const char **step);

#endif
