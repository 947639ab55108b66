/* memcpy speed by the distance between source and destination modulo 4 KiB.
 *
 * rustls copies each TLS record's plaintext 5 bytes past the start of a fresh buffer; with
 * page-aligned buffers on both sides, glibc's `rep movsb` path runs many times slower on some
 * AMD CPUs. This copies 1 GiB in RECORD-byte pieces from a page-aligned 1 MiB buffer to a
 * page-aligned buffer at OFFSET and prints GB/s. Compare with
 * GLIBC_TUNABLES=glibc.cpu.x86_rep_movsb_threshold=2147483647 (docs/performance.md).
 *
 *   cc -O2 -o memcpy_alias tests/bench/memcpy_alias.c && ./memcpy_alias 16384 5
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

int main(int argc, char **argv) {
    if (argc != 3) {
        fprintf(stderr, "usage: %s RECORD OFFSET\n", argv[0]);
        return 2;
    }
    size_t record = strtoul(argv[1], NULL, 10);
    size_t offset = strtoul(argv[2], NULL, 10);
    size_t src_size = 1 << 20;
    char *src, *dst;
    if (record == 0 || record > src_size || posix_memalign((void **)&src, 4096, src_size) ||
        posix_memalign((void **)&dst, 4096, record + offset + 4096)) {
        fprintf(stderr, "bad sizes or out of memory\n");
        return 1;
    }
    memset(src, 1, src_size);
    memset(dst, 0, record + offset + 4096);
    struct timespec a, b;
    size_t total = 0, rounds = (1UL << 30) / record;
    clock_gettime(CLOCK_MONOTONIC, &a);
    for (size_t i = 0; i < rounds; i++) {
        memcpy(dst + offset, src + (i % (src_size / record)) * record, record);
        __asm__ volatile("" : : "r"(dst) : "memory");
        total += record;
    }
    clock_gettime(CLOCK_MONOTONIC, &b);
    double secs = (b.tv_sec - a.tv_sec) + (b.tv_nsec - a.tv_nsec) / 1e9;
    printf("record %zu, offset %zu: %.2f GB/s\n", record, offset, total / secs / 1e9);
    return 0;
}
