// SPDX-License-Identifier: MPL-2.0
// doze-working-set: remember which pages of a guest RAM file were in memory
// when a VM went to sleep, and read exactly those back when it wakes, so the
// guest's first instructions after `cont` find them in the page cache instead
// of faulting them in from disk one readaround window at a time.
//
//   doze-working-set save FILE OUT   mincore() over FILE; writes the resident
//                                    ranges to OUT, one "FIRST_PAGE PAGES" per
//                                    line (4 KiB pages); run before the file is
//                                    dropped from the page cache
//   doze-working-set load FILE IN    reads each range of IN into the page cache,
//                                    in address order. Page cache is charged to
//                                    the caller's memory cgroup: doze vm runs it
//                                    in the VM's
//   exit 0 done, 1 error (message on stderr)
//
// Build: cc -O2 -Wall -Werror doze-working-set.c -o doze-working-set (see Makefile).
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#define PAGE 4096UL
#define CHUNK 512UL /* pages: 2 MiB */

static int save(const char *file, const char *out) {
  int fd = open(file, O_RDONLY | O_CLOEXEC);
  struct stat st;
  if (fd < 0 || fstat(fd, &st) < 0) {
    fprintf(stderr, "doze-working-set: %s: %s\n", file, strerror(errno));
    return 1;
  }
  size_t pages = ((size_t)st.st_size + PAGE - 1) / PAGE;
  FILE *f = fopen(out, "w");
  if (!f) {
    fprintf(stderr, "doze-working-set: %s: %s\n", out, strerror(errno));
    return 1;
  }
  if (pages > 0) {
    // A read-only shared mapping touches nothing: mincore reports the page cache.
    void *map = mmap(NULL, (size_t)st.st_size, PROT_READ, MAP_SHARED, fd, 0);
    unsigned char *vec = malloc(pages);
    if (map == MAP_FAILED || !vec || mincore(map, (size_t)st.st_size, vec) < 0) {
      fprintf(stderr, "doze-working-set: mincore on %s: %s\n", file, strerror(errno));
      return 1;
    }
    for (size_t i = 0; i < pages;) {
      if (!(vec[i] & 1)) {
        i++;
        continue;
      }
      size_t first = i;
      while (i < pages && (vec[i] & 1)) i++;
      fprintf(f, "%zu %zu\n", first, i - first);
    }
    munmap(map, (size_t)st.st_size);
    free(vec);
  }
  if (fflush(f) != 0 || fsync(fileno(f)) < 0 || fclose(f) != 0) {
    fprintf(stderr, "doze-working-set: writing %s: %s\n", out, strerror(errno));
    return 1;
  }
  close(fd);
  return 0;
}

static int load(const char *file, const char *in) {
  int fd = open(file, O_RDONLY | O_CLOEXEC);
  FILE *f = fopen(in, "r");
  if (fd < 0 || !f) {
    fprintf(stderr, "doze-working-set: %s: %s\n", fd < 0 ? file : in, strerror(errno));
    return 1;
  }
  // Plain reads, one CHUNK at a time, in address order: one request in flight, so the
  // guest's own page faults (and QEMU's start) never queue behind a deep read-ahead.
  // (posix_fadvise(WILLNEED) queued it all at once and doubled doze's wake overhead here.)
  static char buffer[CHUNK * PAGE];
  unsigned long first, count;
  while (fscanf(f, "%lu %lu", &first, &count) == 2) {
    for (unsigned long at = first; at < first + count; at += CHUNK) {
      unsigned long n = first + count - at < CHUNK ? first + count - at : CHUNK;
      if (pread(fd, buffer, n * PAGE, (off_t)(at * PAGE)) < 0) {
        fprintf(stderr, "doze-working-set: reading %s back: %s\n", file, strerror(errno));
        return 1;
      }
    }
  }
  fclose(f);
  close(fd);
  return 0;
}

int main(int argc, char **argv) {
  if (argc == 4 && strcmp(argv[1], "save") == 0) return save(argv[2], argv[3]);
  if (argc == 4 && strcmp(argv[1], "load") == 0) return load(argv[2], argv[3]);
  fprintf(stderr, "usage: doze-working-set save|load FILE RANGES\n");
  return 1;
}
