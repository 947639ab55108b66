#!/usr/bin/env python3
"""Helpers of tests/bench/small_files.sh (issue #20, many small files). Standard library only.

  small_files.py make DIR N SIZE
      N files of SIZE random bytes, DIR/f-00001.bin ... (names sort in creation order).
  small_files.py reference SRC OUT
      The serial durable reference: for each file of SRC in name order, one at a time, writes
      its bytes into OUT/a, OUT/b and OUT/c (open, write, fsync, close each copy), then fsyncs
      the three folders. Prints files_per_s=... secs=... files=...
  small_files.py davput HOST:PORT USER:PASSWORD SRC DEST THREADS
      MKCOL DEST, then PUTs every file of SRC to DEST/NAME from THREADS threads, each on its own
      keep-alive http.client connection (bodies read into memory first, so only the requests
      are timed). Fails on any answer other than 201/204. Prints files_per_s=... secs=...
  small_files.py count JSON_FILE_OR_-
      The number of files in a `wormfs --json ls` answer.
"""

import base64
import http.client
import json
import os
import sys
import threading
import time


def make(d, n, size):
    os.makedirs(d, exist_ok=True)
    width = max(5, len(str(n)))
    for i in range(1, n + 1):
        with open(os.path.join(d, f"f-{i:0{width}d}.bin"), "wb") as f:
            f.write(os.urandom(size))


def reference(src, out):
    names = sorted(os.listdir(src))
    dirs = [os.path.join(out, x) for x in ("a", "b", "c")]
    for d in dirs:
        os.makedirs(d, exist_ok=True)
    dfds = [os.open(d, os.O_RDONLY | os.O_DIRECTORY) for d in dirs]
    t = time.perf_counter()
    for name in names:
        with open(os.path.join(src, name), "rb") as f:
            data = f.read()
        for d in dirs:
            fd = os.open(os.path.join(d, name), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
            try:
                view = memoryview(data)
                while view:
                    view = view[os.write(fd, view):]
                os.fsync(fd)
            finally:
                os.close(fd)
        for dfd in dfds:
            os.fsync(dfd)
    secs = time.perf_counter() - t
    for dfd in dfds:
        os.close(dfd)
    print(f"files_per_s={len(names) / secs:.1f} secs={secs:.3f} files={len(names)}")


def davput(hostport, login, src, dest, threads):
    host, port = hostport.rsplit(":", 1)
    auth = "Basic " + base64.b64encode(login.encode()).decode()
    dest = "/" + dest.strip("/")
    names = sorted(os.listdir(src))
    bodies = []
    for name in names:
        with open(os.path.join(src, name), "rb") as f:
            bodies.append((name, f.read()))

    c = http.client.HTTPConnection(host, int(port), timeout=120)
    c.request("MKCOL", dest + "/", headers={"Authorization": auth})
    r = c.getresponse()
    r.read()
    if r.status not in (201, 405):
        sys.exit(f"MKCOL {dest}/: {r.status} {r.reason}")
    c.close()

    lock = threading.Lock()
    nxt = [0]
    errors = []

    def worker():
        conn = http.client.HTTPConnection(host, int(port), timeout=120)
        while True:
            with lock:
                i = nxt[0]
                nxt[0] += 1
            if i >= len(bodies) or errors:
                break
            name, body = bodies[i]
            conn.request(
                "PUT",
                f"{dest}/{name}",
                body=body,
                headers={"Authorization": auth, "Content-Type": "application/octet-stream"},
            )
            r = conn.getresponse()
            answer = r.read()
            if r.status not in (201, 204):
                errors.append(f"PUT {dest}/{name}: {r.status} {answer[:200]!r}")
                break
        conn.close()

    ts = [threading.Thread(target=worker) for _ in range(threads)]
    t = time.perf_counter()
    for th in ts:
        th.start()
    for th in ts:
        th.join()
    secs = time.perf_counter() - t
    if errors:
        sys.exit(errors[0])
    print(f"files_per_s={len(bodies) / secs:.1f} secs={secs:.3f} files={len(bodies)}")


def count(path):
    d = json.load(sys.stdin if path == "-" else open(path))
    print(sum(1 for e in d["entries"] if e["kind"] == "file"))


def main():
    a = sys.argv[1:]
    if a[:1] == ["make"] and len(a) == 4:
        make(a[1], int(a[2]), int(a[3]))
    elif a[:1] == ["reference"] and len(a) == 3:
        reference(a[1], a[2])
    elif a[:1] == ["davput"] and len(a) == 6:
        davput(a[1], a[2], a[3], a[4], int(a[5]))
    elif a[:1] == ["count"] and len(a) == 2:
        count(a[1])
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main()
