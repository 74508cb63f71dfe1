/**
 * glibc's malloc gives the free memory at the top of its heap back to the kernel once more than
 * its trim threshold (128 KiB at start) is free there. Node reads a socket into 64 KiB heap blocks,
 * and V8 frees them in bulk when it sweeps their Buffers (tens of MiB at a time while a large body
 * streams in): so they were handed back and faulted in again, about 1,400 page faults and 4 ms of
 * system time per 10 MiB message, half the CPU a large body cost (docs/performance.md).
 *
 * glibc raises its thresholds itself when a block it mmapped is freed: allocations up to that
 * block's size stay on the heap, and twice that size may stay free at its top. One such block,
 * freed at start, is how to ask for that without a native call (mallopt) or an environment
 * variable (MALLOC_TRIM_THRESHOLD_) the user must set. The cost: up to twice BLOCK of freed
 * memory may stay resident after a burst. Other allocators (musl) see one allocation and its free.
 */
const BLOCK = 24 * 1024 * 1024; // glibc adjusts only for blocks up to 32 MiB (DEFAULT_MMAP_THRESHOLD_MAX)

export function raiseMallocThresholds(): void {
  if (process.platform !== 'linux') return;
  // Uninitialized, so only the page written is touched; unreferenced at once, freed at the next GC.
  Buffer.allocUnsafeSlow(BLOCK)[0] = 0;
}
