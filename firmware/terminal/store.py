"""Small records in flash, replaced atomically.

    write_atomic("/flash", "params.bin", data)   # old or new after a power cut
    data = read("/flash", "params.bin")           # bytes or None

Write to NAME.tmp, then rename over NAME: LittleFS renames atomically, so a
reader sees the old record or the new one, never a torn mix.
"""

import os


def path(root, name):
    return root + "/" + name if root else name


def write_atomic(root, name, data):
    p = path(root, name)
    tmp = p + ".tmp"
    with open(tmp, "wb") as f:
        f.write(data)
    os.rename(tmp, p)


def read(root, name):
    try:
        with open(path(root, name), "rb") as f:
            return f.read()
    except OSError:
        return None


def free_bytes(root):
    st = os.statvfs(root or "/")
    return st[0] * st[4], st[0] * st[2]  # (free, total)
