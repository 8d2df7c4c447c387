// SPDX-License-Identifier: MPL-2.0
// doze-pageout: push a shared file mapping's pages out of memory, and only
// them. The qemu runtime runs it on a stopped VM's guest RAM file:
//   1. fdatasync(FILE): memory reclaim never writes file pages itself;
//   2. process_madvise(MADV_PAGEOUT) (Linux 5.10+) on every mapping of FILE in
//      the process that maps it: unmaps the pages (measured on 6.18: the pages
//      leave the process but stay in the page cache);
//   3. posix_fadvise(POSIX_FADV_DONTNEED): drops the now clean, unmapped pages.
// QEMU's own code and heap stay resident (a memory-cgroup-wide reclaim evicts
// them too and slows the next `cont`).
//
//   doze-pageout FILE [PID]  PID: the process to look in first (else every
//                            process mapping FILE); prints "PID MAPPINGS BYTES"
//                            per process. PID 0: nothing maps FILE (its process
//                            exited, doze vm's snapshot sleep): write back and
//                            drop only, exit 0
//   doze-pageout --pids PID...
//                            every mapping of each process (anonymous memory to
//                            swap, file pages dropped once clean): the freezer
//                            runtime's alternative to a cgroup-wide reclaim, for
//                            measuring (agent/runtimes/freezer-reclaim.ts;
//                            docs/memory.md). Ranges are advised 2 MiB at a
//                            time, so a SIGKILL stops it within one piece.
//                            Prints "PID MAPPINGS BYTES" per process.
//   doze-pageout --record PID...
//                            prints "PID START BYTES" for each run of anonymous
//                            pages of the process that are in memory now
//                            (/proc/PID/pagemap bit 63): the working set the freezer runtime brings back
//                            on the next wake (working-set prefetch)
//   doze-pageout --willneed FILE
//                            process_madvise(MADV_WILLNEED) over each range of FILE
//                            (as --record wrote it): swapped pages are read back
//                            into the swap cache ahead of the process's faults
//   exit 0 done, 3 no process maps FILE (the cache is dropped anyway),
//   1 error (message on stderr)
//
// Build: cc -O2 -Wall -Werror doze-pageout.c -o doze-pageout (see Makefile).
#define _GNU_SOURCE
#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <unistd.h>

#ifndef MADV_PAGEOUT
#define MADV_PAGEOUT 21
#endif
#ifndef SYS_pidfd_open
#define SYS_pidfd_open 434
#endif
#ifndef SYS_process_madvise
#define SYS_process_madvise 440
#endif

#define MAX_RANGES 1024
// process_madvise takes at most MAX_RW_COUNT bytes per call: advise in 1 GiB pieces.
#define CHUNK (1UL << 30)

// Whole-process mode: pieces small enough that a kill lands between two of them.
#define PIECE (2UL << 20)

// Every mapping of pid but the kernel's own ([vsyscall], [vvar], [vdso]), advised in
// PIECE-sized calls; EINVAL/ENOMEM/EAGAIN on a piece (a mapping gone or locked) skips it.
static int pageout_all(pid_t pid) {
  char path[64];
  snprintf(path, sizeof path, "/proc/%d/maps", (int)pid);
  FILE *maps = fopen(path, "r");
  if (!maps) return errno == ENOENT ? 0 : -1;
  int pidfd = (int)syscall(SYS_pidfd_open, pid, 0);
  if (pidfd < 0) {
    int saved = errno;
    fclose(maps);
    errno = saved;
    return saved == ESRCH ? 0 : -1;
  }
  char line[8192];
  int mappings = 0;
  unsigned long bytes = 0;
  while (fgets(line, sizeof line, maps)) {
    unsigned long start, end;
    if (sscanf(line, "%lx-%lx", &start, &end) < 2) continue;
    if (strstr(line, "[vsyscall]") || strstr(line, "[vvar]") || strstr(line, "[vdso]")) continue;
    mappings++;
    for (unsigned long from = start; from < end; from += PIECE) {
      struct iovec piece = { (void *)from, end - from < PIECE ? end - from : PIECE };
      long done = syscall(SYS_process_madvise, pidfd, &piece, 1UL, MADV_PAGEOUT, 0U);
      if (done > 0) bytes += (unsigned long)done;
      else if (done < 0 && errno != EINVAL && errno != ENOMEM && errno != EAGAIN && errno != EINTR) {
        int saved = errno;
        close(pidfd);
        fclose(maps);
        errno = saved;
        return -1;
      }
    }
  }
  close(pidfd);
  fclose(maps);
  printf("%d %d %lu\n", (int)pid, mappings, bytes);
  fflush(stdout);
  return 0;
}

#ifndef MADV_WILLNEED
#define MADV_WILLNEED 3
#endif
#define PAGE 4096UL

// Resident runs of pid's anonymous mappings: what went to swap and must come back (file mappings
// are left to the page cache; the runtime's code is mostly shared and stays resident).
static int record(pid_t pid) {
  char path[64];
  snprintf(path, sizeof path, "/proc/%d/maps", (int)pid);
  FILE *maps = fopen(path, "r");
  if (!maps) return errno == ENOENT ? 0 : -1;
  snprintf(path, sizeof path, "/proc/%d/pagemap", (int)pid);
  int pm = open(path, O_RDONLY | O_CLOEXEC);
  if (pm < 0) {
    fclose(maps);
    return -1;
  }
  static unsigned long long entries[512];
  char line[8192];
  while (fgets(line, sizeof line, maps)) {
    unsigned long start, end;
    if (sscanf(line, "%lx-%lx", &start, &end) < 2) continue;
    if (strchr(line, '/') || strstr(line, "[vsyscall]") || strstr(line, "[vvar]") || strstr(line, "[vdso]")) continue;
    unsigned long run = 0, runStart = 0;
    for (unsigned long at = start; at < end;) {
      unsigned long n = (end - at) / PAGE < 512 ? (end - at) / PAGE : 512;
      ssize_t got = pread(pm, entries, n * 8, (off_t)(at / PAGE * 8));
      if (got <= 0) break;
      for (unsigned long i = 0; i < (unsigned long)got / 8; i++, at += PAGE) {
        if (entries[i] >> 63) {
          if (run == 0) runStart = at;
          run += PAGE;
        } else if (run) {
          printf("%d %lx %lu\n", (int)pid, runStart, run);
          run = 0;
        }
      }
    }
    if (run) printf("%d %lx %lu\n", (int)pid, runStart, run);
  }
  close(pm);
  fclose(maps);
  return 0;
}

static int willneed(const char *file) {
  FILE *in = fopen(file, "r");
  if (!in) return -1;
  int pid, pidfd = -1, current = 0;
  unsigned long start, len;
  while (fscanf(in, "%d %lx %lu", &pid, &start, &len) == 3) {
    if (pid != current) {
      if (pidfd >= 0) close(pidfd);
      pidfd = (int)syscall(SYS_pidfd_open, pid, 0);
      current = pid;
    }
    if (pidfd < 0) continue; // that process is gone
    struct iovec range = { (void *)start, len };
    (void)syscall(SYS_process_madvise, pidfd, &range, 1UL, MADV_WILLNEED, 0U); // best effort: a range unmapped since is skipped
  }
  if (pidfd >= 0) close(pidfd);
  fclose(in);
  return 0;
}

static int collect(pid_t pid, const char *file, struct iovec *ranges, int max) {
  char path[64];
  snprintf(path, sizeof path, "/proc/%d/maps", (int)pid);
  FILE *maps = fopen(path, "r");
  if (!maps) return -1;
  char line[8192];
  int n = 0;
  while (fgets(line, sizeof line, maps)) {
    unsigned long start, end;
    int at = 0;
    if (sscanf(line, "%lx-%lx %*s %*s %*s %*s %n", &start, &end, &at) < 2 || at == 0) continue;
    char *name = line + at;
    name[strcspn(name, "\n")] = '\0';
    if (strcmp(name, file) != 0) continue;
    for (unsigned long from = start; from < end && n < max; from += CHUNK) {
      ranges[n].iov_base = (void *)from;
      ranges[n].iov_len = end - from < CHUNK ? end - from : CHUNK;
      n++;
    }
  }
  fclose(maps);
  return n;
}

static int pageout(pid_t pid, struct iovec *ranges, int n, unsigned long *bytes) {
  int pidfd = (int)syscall(SYS_pidfd_open, pid, 0);
  if (pidfd < 0) return -1;
  *bytes = 0;
  for (int i = 0; i < n; i++) {
    // One range per call: a partial result then only ever concerns this range.
    while (ranges[i].iov_len > 0) {
      long done = syscall(SYS_process_madvise, pidfd, &ranges[i], 1UL, MADV_PAGEOUT, 0U);
      if (done < 0) {
        if (errno == EINTR) continue;
        int saved = errno;
        close(pidfd);
        errno = saved;
        return -1;
      }
      if (done == 0) break;
      *bytes += (unsigned long)done;
      ranges[i].iov_base = (char *)ranges[i].iov_base + done;
      ranges[i].iov_len -= (unsigned long)done;
    }
  }
  close(pidfd);
  return 0;
}

static struct iovec ranges[MAX_RANGES];

static int one(pid_t pid, const char *file, int *found) {
  int n = collect(pid, file, ranges, MAX_RANGES);
  if (n <= 0) return 0;
  unsigned long bytes = 0;
  if (pageout(pid, ranges, n, &bytes) < 0) {
    fprintf(stderr, "doze-pageout: process_madvise(MADV_PAGEOUT) on pid %d: %s\n", (int)pid, strerror(errno));
    return -1;
  }
  printf("%d %d %lu\n", (int)pid, n, bytes);
  (*found)++;
  return 0;
}

static int drop(int fd, const char *file, int found) {
  int err = posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED);
  close(fd);
  if (err) {
    fprintf(stderr, "doze-pageout: dropping %s from the page cache: %s\n", file, strerror(err));
    return 1;
  }
  return found ? 0 : 3;
}

int main(int argc, char **argv) {
  if (argc >= 2 && strcmp(argv[1], "--record") == 0) {
    for (int i = 2; i < argc; i++) {
      if (record((pid_t)atoi(argv[i])) < 0) {
        fprintf(stderr, "doze-pageout: reading the pages of pid %s: %s\n", argv[i], strerror(errno));
        return 1;
      }
    }
    return 0;
  }
  if (argc == 3 && strcmp(argv[1], "--willneed") == 0) {
    if (willneed(argv[2]) < 0) {
      fprintf(stderr, "doze-pageout: %s: %s\n", argv[2], strerror(errno));
      return 1;
    }
    return 0;
  }
  if (argc >= 2 && strcmp(argv[1], "--pids") == 0) {
    for (int i = 2; i < argc; i++) {
      if (pageout_all((pid_t)atoi(argv[i])) < 0) {
        fprintf(stderr, "doze-pageout: process_madvise(MADV_PAGEOUT) on pid %s: %s\n", argv[i], strerror(errno));
        return 1;
      }
    }
    return 0;
  }
  if (argc < 2 || argc > 3) {
    fprintf(stderr, "usage: doze-pageout FILE [PID] | doze-pageout --pids PID...\n");
    return 1;
  }
  char *file = realpath(argv[1], NULL);
  if (!file) {
    fprintf(stderr, "doze-pageout: %s: %s\n", argv[1], strerror(errno));
    return 1;
  }
  int fd = open(file, O_RDONLY | O_CLOEXEC);
  if (fd < 0 || fdatasync(fd) < 0) {
    fprintf(stderr, "doze-pageout: writing back %s: %s\n", file, strerror(errno));
    return 1;
  }
  int found = 0;
  if (argc == 3 && atoi(argv[2]) == 0) return drop(fd, file, 1);
  if (argc == 3) {
    if (one((pid_t)atoi(argv[2]), file, &found) < 0) return 1;
    if (found) return drop(fd, file, found);
  }
  DIR *proc = opendir("/proc");
  if (!proc) {
    fprintf(stderr, "doze-pageout: /proc: %s\n", strerror(errno));
    return 1;
  }
  struct dirent *entry;
  while ((entry = readdir(proc))) {
    if (!isdigit((unsigned char)entry->d_name[0])) continue;
    if (one((pid_t)atoi(entry->d_name), file, &found) < 0) {
      closedir(proc);
      return 1;
    }
  }
  closedir(proc);
  return drop(fd, file, found);
}
