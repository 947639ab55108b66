#!/usr/bin/env python3
"""A passthrough FUSE filesystem whose fsync costs FLUSH_MS more, so that a loop device over an
image file in it pays for each cache flush what a real disk does.

    /usr/bin/python3 tests/bench/slow_flush.py BACKING_DIR MOUNTPOINT FLUSH_MS

A loop device turns every flush request of the filesystem above it (an ext4 journal commit
sends two: the flush before the commit block and the commit block's FUA) into an fsync of its
backing file, so with the image here each of them waits FLUSH_MS. On this project's virtual
machine a flush costs about 0.3 ms, far below any disk: a 7,200 rpm disk needs on average half
a revolution (4.2 ms) before it can write anything, and a SATA SSD without power-loss
protection writes its cache out in 1 to 3 ms. Used by tests/bench/small_files_slow_disk.sh
(issue #20); needs python3-fusepy (Debian) and root for the loop device. Foreground; stop it
with fusermount -u MOUNTPOINT.
"""
import os
import sys
import time

from fusepy import FUSE, Operations  # Debian: python3-fusepy

STAT_KEYS = ('st_atime', 'st_ctime', 'st_gid', 'st_mode', 'st_mtime', 'st_nlink', 'st_size',
             'st_uid', 'st_blocks')
STATFS_KEYS = ('f_bavail', 'f_bfree', 'f_blocks', 'f_bsize', 'f_favail', 'f_ffree', 'f_files',
               'f_flag', 'f_frsize', 'f_namemax')


class SlowFlush(Operations):
    """Every call goes to the same path under `root`; fsync sleeps `delay` seconds after it."""

    def __init__(self, root, delay):
        self.root = root
        self.delay = delay

    def _p(self, path):
        return os.path.join(self.root, path.lstrip('/'))

    def getattr(self, path, fh=None):
        st = os.lstat(self._p(path))
        return {k: getattr(st, k) for k in STAT_KEYS}

    def readdir(self, path, fh):
        return ['.', '..'] + os.listdir(self._p(path))

    def statfs(self, path):
        s = os.statvfs(self._p(path))
        return {k: getattr(s, k) for k in STATFS_KEYS}

    def open(self, path, flags):
        return os.open(self._p(path), flags)

    def create(self, path, mode, fi=None):
        return os.open(self._p(path), os.O_RDWR | os.O_CREAT, mode)

    def read(self, path, size, offset, fh):
        return os.pread(fh, size, offset)

    def write(self, path, data, offset, fh):
        return os.pwrite(fh, data, offset)

    def truncate(self, path, length, fh=None):
        os.truncate(self._p(path), length)

    def unlink(self, path):
        os.unlink(self._p(path))

    def release(self, path, fh):
        os.close(fh)

    def flush(self, path, fh):
        return 0

    def fsync(self, path, datasync, fh):
        os.fsync(fh)
        time.sleep(self.delay)
        return 0


def main():
    root, mnt, ms = sys.argv[1], sys.argv[2], float(sys.argv[3])
    FUSE(SlowFlush(root, ms / 1000.0), mnt, foreground=True, nothreads=False, big_writes=True,
         max_write=1 << 20)


if __name__ == '__main__':
    main()
