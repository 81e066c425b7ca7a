#define _GNU_SOURCE
#include "apus_system.h"

#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <net/if.h>
#include <sched.h>
#include <signal.h>
#include <spawn.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

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

/// What the child reports through the pipe when a step fails: the step's index and errno.
struct apus_child_error {
  int step;
  int error;
};

static const char *const apus_steps[] = {
    "setpgid", "unshare(CLONE_NEWNET)", "bring up loopback", "unshare(CLONE_NEWNS)",
    "make mounts private", "hide a path", "open /dev/null", "dup2", "chdir", "setgroups",
    "setgid", "setuid", "execve",
};

static void apus_child_fail(int fd, int step) {
  struct apus_child_error e = {step, errno};
  ssize_t n = write(fd, &e, sizeof e);
  (void)n;
  _exit(127);
}

static int apus_loopback_up(void) {
  int s = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  if (s < 0) return -1;
  struct ifreq ifr;
  memset(&ifr, 0, sizeof ifr);
  strncpy(ifr.ifr_name, "lo", IFNAMSIZ - 1);
  int rc = ioctl(s, SIOCGIFFLAGS, &ifr);
  if (rc == 0) {
    ifr.ifr_flags |= IFF_UP | IFF_RUNNING;
    rc = ioctl(s, SIOCSIFFLAGS, &ifr);
  }
  close(s);
  return rc;
}

int apus_spawn_isolated(const char *path, char *const argv[], char *const envp[], const char *cwd,
                        int stdout_fd, int stderr_fd, const struct apus_isolation *iso,
                        pid_t *pid, const char **step) {
  int report[2];
  if (pipe2(report, O_CLOEXEC) != 0) {
    *step = "pipe";
    return errno;
  }
  pid_t child = fork();
  if (child < 0) {
    int e = errno;
    close(report[0]);
    close(report[1]);
    *step = "fork";
    return e;
  }
  if (child == 0) {
    // Only system calls from here on: the parent has other threads, whose locks may be held.
    close(report[0]);
    int w = report[1];
    if (setpgid(0, 0) != 0) apus_child_fail(w, 0);
    if (iso && iso->no_network) {
      if (unshare(CLONE_NEWNET) != 0) apus_child_fail(w, 1);
      if (apus_loopback_up() != 0) apus_child_fail(w, 2);
    }
    if (iso && iso->hide && iso->hide[0]) {
      if (unshare(CLONE_NEWNS) != 0) apus_child_fail(w, 3);
      if (mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) != 0) apus_child_fail(w, 4);
      for (const char *const *p = iso->hide; *p; p++) {
        struct stat st;
        if (stat(*p, &st) != 0) continue;  // nothing there to hide
        int rc = S_ISDIR(st.st_mode)
                     ? mount("tmpfs", *p, "tmpfs", MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC, "size=4k,mode=000")
                     : mount("/dev/null", *p, NULL, MS_BIND, NULL);
        if (rc != 0) apus_child_fail(w, 5);
      }
    }
    int null = open("/dev/null", O_RDONLY);
    if (null < 0) apus_child_fail(w, 6);
    if (dup2(null, 0) < 0 || dup2(stdout_fd, 1) < 0 || dup2(stderr_fd, 2) < 0) apus_child_fail(w, 7);
    if (null > 2) close(null);
    if (chdir(cwd) != 0) apus_child_fail(w, 8);
    if (iso && iso->change_user) {
      if (setgroups(0, NULL) != 0) apus_child_fail(w, 9);
      if (setgid(iso->gid) != 0) apus_child_fail(w, 10);
      if (setuid(iso->uid) != 0) apus_child_fail(w, 11);
    }
    sigset_t empty;
    sigemptyset(&empty);
    sigprocmask(SIG_SETMASK, &empty, NULL);
    for (int sig = 1; sig < NSIG; sig++) signal(sig, SIG_DFL);
    execve(path, argv, envp);
    apus_child_fail(w, 12);
  }
  close(report[1]);
  // Also from the parent, so a kill of the group right after this returns reaches the child.
  setpgid(child, child);
  struct apus_child_error e;
  ssize_t n;
  do {
    n = read(report[0], &e, sizeof e);
  } while (n < 0 && errno == EINTR);
  close(report[0]);
  if (n == (ssize_t)sizeof e) {
    int status;
    while (waitpid(child, &status, 0) < 0 && errno == EINTR) {
    }
    *step = apus_steps[e.step];
    return e.error;
  }
  *pid = child;
  return 0;
}
