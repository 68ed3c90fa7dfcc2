"""The firmware's heap on a 32-bit MicroPython against the 64-bit unix port.

    (cd build && npm pack @micropython/micropython-webassembly-pyscript@1.27.0)
    .venv/bin/python -m bench.heap32 \
        --package build/micropython-micropython-webassembly-pyscript-1.27.0.tgz

A measuring tool, not a benchmark with goals: `make bench` and `make test` do
not run it. It compiles the firmware to bytecode-only .mpy (host_tools.build's
compile_firmware, no -march) plus the board file as board.mpy, checks that both
runtimes accept that .mpy version, and runs the same MicroPython script
(bench/heap32_probe.py) under

- the unix port of the venv (64-bit), `micropython -X heapsize=<--heap>`, and
- MicroPython's wasm32 build, the npm package above (a .tgz, unpacked into a
  temporary directory, or its unpacked `package/` directory), under Node.js
  (bench/heap32.mjs). Its heap grows on demand: it measures, it does not cap.

Both print gc.mem_alloc() after a collection and micropython.qstr_info() at
each stage: the resident modules imported, the objects the terminal builds at
boot with the board file's capacities (keys provisioned to capacity, flash as
plain files: the wasm build has no LittleFS), the list-update stack imported on
top, and a status command served. The table gives each runtime's bytes and
their ratio, also less the base (the script itself, stdlib, test doubles) and
less the qstr pools. Without node or the package it measures the unix port
alone and says why.
"""

import argparse
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PROBE = ROOT / "bench" / "heap32_probe.py"
DRIVER = ROOT / "bench" / "heap32.mjs"
PACKAGE = "@micropython/micropython-webassembly-pyscript@1.27.0"
DEFAULT_PACKAGE = ROOT / "build" / "micropython-micropython-webassembly-pyscript-1.27.0.tgz"
_QSTR = re.compile(r"qstr pool: n_pool=(\d+), n_qstr=(\d+), n_str_data_bytes=(\d+), "
                   r"n_total_bytes=(\d+)")


def compile_fw(dest, board):
    """The firmware's bytecode .mpy files and board.mpy in dest; returns the
    header (version, sub-version, arch) of every .mpy, as a set."""
    from host_tools.build import compile_firmware, mpy_cross

    compile_firmware(dest)
    subprocess.run([mpy_cross(), "-o", str(dest / "board.mpy"), "-s", "board.py",
                    str(ROOT / "boards" / f"{board}.py")], check=True)
    headers = set()
    for mpy in dest.rglob("*.mpy"):
        head = mpy.read_bytes()[:4]
        headers.add((head[1], head[2] & 3, head[2] >> 2))
    return headers


def parse(out):
    """{stage: (heap bytes, qstr pools, qstrs, qstr bytes)} and the info lines."""
    stages, info = {}, {}
    lines = out.splitlines()
    for i, line in enumerate(lines):
        parts = line.split()
        if not parts or parts[0] != "HEAP32":
            continue
        if len(parts) == 3 and parts[2].isdigit() and i + 1 < len(lines):
            m = _QSTR.match(lines[i + 1])
            if m:
                pools, n, _data, total = (int(g) for g in m.groups())
                stages[parts[1]] = (int(parts[2]), pools, n, total)
                continue
        info[parts[1]] = " ".join(parts[2:])
    return stages, info


def run_unix(fw, heap, real_aes):
    from host_tools.emulator import micropython_binary

    with tempfile.TemporaryDirectory(prefix="heap32-root-") as root:
        cmd = [micropython_binary(), "-X", f"heapsize={heap}", str(PROBE), str(fw), root]
        if real_aes:
            cmd.append("real-aes")
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    if proc.returncode != 0:
        sys.exit("heap32: the unix port's run failed:\n" + proc.stdout + proc.stderr)
    return parse(proc.stdout)


def wasm_package(path, tmp):
    """The directory holding micropython.mjs, from a .tgz (unpacked into tmp) or
    a directory; None with the reason when there is none."""
    if not path.exists():
        return None, "no %s (get it with `npm pack %s`)" % (path, PACKAGE)
    if path.is_dir():
        for d in (path, path / "package"):
            if (d / "micropython.mjs").exists():
                return d, None
        return None, "%s has no micropython.mjs" % path
    with tarfile.open(path) as tar:
        tar.extractall(tmp, filter="data")
    d = Path(tmp) / "package"
    if not (d / "micropython.mjs").exists():
        return None, "%s has no package/micropython.mjs" % path
    return d, None


def run_wasm(fw, pkg, heap):
    node = shutil.which("node")
    proc = subprocess.run([node, str(DRIVER), str(pkg), str(fw), str(PROBE), str(heap)],
                          capture_output=True, text=True, timeout=300)
    if proc.returncode != 0:
        sys.exit("heap32: the wasm32 run failed:\n" + proc.stdout + proc.stderr[-3000:])
    return parse(proc.stdout)


def table(unix, wasm):
    from bench.__main__ import format_table

    ub, wb = unix["base"][0], wasm["base"][0] if wasm else 0
    rows = []
    for stage, (u, upools, un, uq) in unix.items():
        row = [stage, f"{u:,}"]
        if wasm:
            w, wpools, wn, wq = wasm[stage]
            ratio = "%.3f" % (w / u)
            own = "—" if stage == "base" else "%.3f" % ((w - wb) / (u - ub))
            noq = "—" if stage == "base" else "%.3f" % ((w - wb - wq + wasm["base"][3])
                                                        / (u - ub - uq + unix["base"][3]))
            row += [f"{w:,}", ratio, f"{u - ub:,}", f"{w - wb:,}", own, noq,
                    f"{uq:,} ({upools}/{un:,})", f"{wq:,} ({wpools}/{wn:,})"]
        else:
            row += [f"{u - ub:,}", f"{uq:,} ({upools}/{un:,})"]
        rows.append(row)
    if wasm:
        cols = ["stage", "unix64 B", "wasm32 B", "ratio", "unix64 - base", "wasm32 - base",
                "ratio - base", "ratio - base - qstr", "qstr B unix64 (pools/qstrs)",
                "qstr B wasm32 (pools/qstrs)"]
    else:
        cols = ["stage", "unix64 B", "unix64 - base", "qstr B unix64 (pools/qstrs)"]
    notes = ("gc.mem_alloc() after a collection at each stage; base: the probe, stdlib and "
             "test doubles. qstr B: micropython.qstr_info()'s n_total_bytes (pools and "
             "string data, in the heap). 'ratio - base - qstr' leaves out both runtimes' "
             "qstr growth since the base, whose pool doublings fall at different stages.")
    return format_table({"title": "Heap: wasm32 against the unix port (64-bit)",
                         "columns": cols, "rows": rows, "notes": notes})


def main(argv=None):
    ap = argparse.ArgumentParser(prog="python -m bench.heap32", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--package", type=Path, default=DEFAULT_PACKAGE,
                    help="the npm package's .tgz or unpacked directory (default: %(default)s)")
    ap.add_argument("--board", default="pico_pn532",
                    help="board file whose capacities are built (default: %(default)s)")
    ap.add_argument("--heap", type=int, default=1024 * 1024,
                    help="heap bytes given to either runtime; large, so that every stage "
                         "fits (default: %(default)s)")
    ap.add_argument("--real-aes", action="store_true",
                    help="unix port only: the real cryptolib.aes, not the probe's stand-in")
    ap.add_argument("--build", type=Path, default=ROOT / "build" / "heap32",
                    help="where the .mpy files go (default: %(default)s)")
    args = ap.parse_args(argv)

    fw = args.build / "fw"
    headers = compile_fw(fw, args.board)
    unix, uinfo = run_unix(fw, args.heap, args.real_aes)
    print("unix port: sys.platform, version, sys.maxsize: %s; takes .mpy %s"
          % (uinfo["runtime"], uinfo["mpy"]))
    wasm = None
    skip = None
    if args.real_aes:
        skip = "--real-aes: the wasm build has no cryptolib"
    elif shutil.which("node") is None:
        skip = "node is not installed (Node.js runs the wasm32 build)"
    with tempfile.TemporaryDirectory(prefix="heap32-wasm-") as tmp:
        pkg = None
        if skip is None:
            pkg, skip = wasm_package(args.package, tmp)
        if skip is None:
            wasm, winfo = run_wasm(fw, pkg, args.heap)
            print("wasm32: sys.platform, version, sys.maxsize: %s; takes .mpy %s"
                  % (winfo["runtime"], winfo["mpy"]))
    compiled = ", ".join("v%d.%d arch %d" % h for h in sorted(headers))
    print("compiled .mpy (bytecode only): %s" % compiled)
    # A loader checks the version byte; the sub-version only for native code, and
    # bytecode-only files carry 0 there (py/persistentcode.c).
    for name, info in (("unix", uinfo),) + ((("wasm32", winfo),) if wasm else ()):
        ver, sub = (int(x) for x in info["mpy"].split())
        if any(h[0] != ver or h[2] != 0 for h in headers):
            sys.exit("heap32: %s takes .mpy v%d.%d, compiled: %s" % (name, ver, sub, compiled))
    print("resident terminal modules: %s; AES objects: %s; list-update stack: %s"
          % (uinfo["terminal_modules"], uinfo["aes_objects"], uinfo["list_update_modules"]))
    print()
    print(table(unix, wasm))
    if skip:
        print("heap32: wasm32 skipped: " + skip, file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
