/* heapfile: move this process's private anonymous memory onto a sealed memfd, mapped
 * MAP_PRIVATE at the same addresses with the same contents (see heapfile.py for why); and
 * later drop the page-table entries of that heap's pages it never wrote (heapfile_trim).
 *
 * Called by the fork-server once, and by the zygote again after a dataset load (heap_only),
 * each single-threaded, through ctypes.PyDLL (the GIL stays held):
 * between copying a region and mapping the copy over it no other code of this process runs, so
 * no write can be lost. Only resident pages are copied; untouched ones stay holes (zeros) in
 * the memfd. Each region is either fully moved or left as it was, so stopping half-way (an mmap
 * failure) leaves a consistent process. Build: cc -O2 -shared -fPIC -o _heapfile.so heapfile.c
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#define MAX_REGIONS 1024
#define HEAP_NAME "/memfd:pod-sandbox-zygote-heap"
static char maps_text[1 << 20];
static unsigned long starts[MAX_REGIONS], ends[MAX_REGIONS];
static unsigned char residency[4096];

static unsigned long parse_hex(const char **p) {
    unsigned long value = 0;
    for (;; (*p)++) {
        char c = **p;
        if (c >= '0' && c <= '9') value = value * 16 + (unsigned long)(c - '0');
        else if (c >= 'a' && c <= 'f') value = value * 16 + (unsigned long)(c - 'a' + 10);
        else return value;
    }
}

/* /proc/self/maps into maps_text, NUL-terminated. Returns 0 or -errno. */
static long read_maps(void) {
    int fd = open("/proc/self/maps", O_RDONLY | O_CLOEXEC);
    if (fd < 0) return -errno;
    size_t len = 0;
    for (;;) {
        ssize_t got = read(fd, maps_text + len, sizeof(maps_text) - 1 - len);
        if (got < 0 && errno == EINTR) continue;
        if (got < 0) { int err = errno; close(fd); return -err; }
        if (got == 0) break;
        len += (size_t)got;
        if (len >= sizeof(maps_text) - 1) { close(fd); return -E2BIG; }
    }
    close(fd);
    maps_text[len] = 0;
    return 0;
}

/* Into starts/ends: private anonymous read-write regions of at least min_bytes, and [heap]; not
 * [stack], not a thread's stack (a region right above a PROT_NONE guard). With heap_only instead
 * the memfd heap's mappings (rw-p, named HEAP_NAME). Returns their count or -errno. */
static long find_regions(unsigned long min_bytes, int heap_only) {
    long err = read_maps();
    if (err < 0) return err;
    long count = 0;
    unsigned long prev_end = 0;
    int prev_guard = 0;
    for (const char *p = maps_text; *p;) {
        const char *eol = strchr(p, '\n');
        if (!eol) eol = p + strlen(p);
        unsigned long start = parse_hex(&p);
        p++;
        unsigned long end = parse_hex(&p);
        p++;
        char perms[5] = {0};
        if (eol - p >= 4) memcpy(perms, p, 4);
        const char *name = p;
        for (int field = 0; field < 4 && name < eol; field++) { /* perms offset dev inode */
            while (name < eol && *name != ' ') name++;
            while (name < eol && *name == ' ') name++;
        }
        int anonymous = name >= eol;
        int heap = eol - name == 6 && strncmp(name, "[heap]", 6) == 0;
        int guard = strcmp(perms, "---p") == 0;
        int thread_stack = prev_guard && prev_end == start;
        int ours = eol - name >= (long)strlen(HEAP_NAME) && strncmp(name, HEAP_NAME, strlen(HEAP_NAME)) == 0;
        int wanted = heap_only ? ours : (anonymous || heap) && !thread_stack && end - start >= min_bytes;
        if (strcmp(perms, "rw-p") == 0 && wanted) {
            if (count == MAX_REGIONS) return -E2BIG;
            starts[count] = start;
            ends[count] = end;
            count++;
        }
        prev_end = end;
        prev_guard = guard;
        p = *eol ? eol + 1 : eol;
    }
    return count;
}

static int copy_resident(int fd, unsigned long start, unsigned long end, unsigned long offset,
                         long page, unsigned long *copied) {
    unsigned long pages = (end - start) / (unsigned long)page;
    for (unsigned long first = 0; first < pages;) {
        unsigned long chunk = pages - first < sizeof(residency) ? pages - first : sizeof(residency);
        if (mincore((void *)(start + first * page), chunk * page, residency) < 0) return -errno;
        for (unsigned long k = 0; k < chunk;) {
            if (!(residency[k] & 1)) { k++; continue; }
            unsigned long run = k;
            while (run < chunk && (residency[run] & 1)) run++;
            unsigned long from = (first + k) * page, to = (first + run) * page, done = 0;
            while (done < to - from) {
                ssize_t put = pwrite(fd, (void *)(start + from + done), to - from - done,
                                     (off_t)(offset + from + done));
                if (put < 0 && errno == EINTR) continue;
                if (put < 0) return -errno;
                done += (unsigned long)put;
            }
            *copied += to - from;
            k = run;
        }
        first += chunk;
    }
    return 0;
}

/* Returns the number of regions moved (>= 0) or -errno before any was moved; *moved_bytes gets
 * the resident bytes copied into the memfd. With heap_only, the mappings of an earlier move's
 * memfd move instead (its pages and those written since alike) onto a new one, whose mappings
 * start with no page mapped and no anonymous page: fork() copies no entry of them until this
 * process writes there again. */
long heapfile_move(unsigned long min_bytes, int heap_only, unsigned long *moved_bytes) {
    long page = sysconf(_SC_PAGESIZE);
    long count = find_regions(min_bytes, heap_only);
    *moved_bytes = 0;
    if (count <= 0) return count;
    unsigned long total = 0;
    for (long i = 0; i < count; i++) total += ends[i] - starts[i];
    int fd = memfd_create("pod-sandbox-zygote-heap", MFD_CLOEXEC | MFD_ALLOW_SEALING);
    if (fd < 0) return -errno;
    int err = ftruncate(fd, (off_t)total) < 0 ? -errno : 0;
    unsigned long offset = 0, copied = 0;
    for (long i = 0; i < count && !err; i++) {
        err = copy_resident(fd, starts[i], ends[i], offset, page, &copied);
        offset += ends[i] - starts[i];
    }
    /* Nobody may change the shared pages from now on, not even through a handle on the file. */
    if (!err && fcntl(fd, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_WRITE | F_SEAL_SEAL) < 0)
        err = -errno;
    long moved = 0;
    offset = 0;
    for (long i = 0; i < count && !err; i++) {
        unsigned long length = ends[i] - starts[i];
        if (mmap((void *)starts[i], length, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_FIXED, fd,
                 (off_t)offset) == MAP_FAILED) {
            if (moved == 0) err = -errno;
            break;
        }
        offset += length;
        moved++;
    }
    close(fd);
    if (err) return err;
    *moved_bytes = copied;
    return moved;
}


#define PM_PRESENT (1UL << 63)
#define PM_FILE (1UL << 61)
static unsigned long pagemap_entries[512];

/* Is page address addr inside one of the n sorted, disjoint [start, start + length) ranges? */
static int kept(unsigned long addr, const unsigned long *keep, long n) {
    long low = 0, high = n;
    while (low < high) {
        long mid = (low + high) / 2;
        if (addr < keep[2 * mid]) high = mid;
        else if (addr >= keep[2 * mid] + keep[2 * mid + 1]) low = mid + 1;
        else return 1;
    }
    return 0;
}

/* A page trim drops: mapped, still the file's (never written here), and not kept. */
static int droppable(unsigned long entry, unsigned long addr, const unsigned long *keep, long n) {
    return (entry & PM_PRESENT) && (entry & PM_FILE) && !kept(addr, keep, n);
}

/* Drop this process's page-table entries for the memfd heap's pages it maps but never wrote
 * (present file pages: no copy of its own), except those in keep (n sorted, disjoint
 * [start, length] pairs). The data stays in the memfd: a later touch faults the page back in.
 * A written page (copied on write, now anonymous) is never dropped: the entries are read from
 * pagemap_fd (this process's /proc/self/pagemap) just before each run is dropped, with the GIL
 * held, and this function's own buffers are written first so they are private already.
 * Returns the pages dropped (>= 0) or -errno. */
long heapfile_trim(int pagemap_fd, const unsigned long *keep, long n) {
    long page = sysconf(_SC_PAGESIZE);
    memset(maps_text, 0, sizeof(maps_text));
    memset(pagemap_entries, 0, sizeof(pagemap_entries));
    long count = find_regions(0, 1);
    if (count < 0) return count;
    long dropped = 0;
    const unsigned long chunk_pages = sizeof(pagemap_entries) / sizeof(pagemap_entries[0]);
    for (long i = 0; i < count; i++) {
        for (unsigned long addr = starts[i]; addr < ends[i];) {
            unsigned long pages = (ends[i] - addr) / (unsigned long)page;
            if (pages > chunk_pages) pages = chunk_pages;
            size_t want = pages * sizeof(unsigned long);
            ssize_t got = pread(pagemap_fd, pagemap_entries, want, (off_t)(addr / page * sizeof(unsigned long)));
            if (got < 0 && errno == EINTR) continue;
            if (got != (ssize_t)want) return got < 0 ? -errno : -EIO;
            for (unsigned long k = 0; k < pages;) {
                if (!droppable(pagemap_entries[k], addr + k * page, keep, n)) { k++; continue; }
                unsigned long run = k + 1;
                while (run < pages && droppable(pagemap_entries[run], addr + run * page, keep, n)) run++;
                if (madvise((void *)(addr + k * page), (run - k) * page, MADV_DONTNEED) < 0) return -errno;
                dropped += (long)(run - k);
                k = run;
            }
            addr += pages * page;
        }
    }
    return dropped;
}
