// Runs bench/heap32_probe.py in MicroPython's wasm32 build under Node.js.
//
//   node bench/heap32.mjs PACKAGE_DIR FW_DIR PROBE_PY [HEAP_BYTES]
//
// PACKAGE_DIR is the unpacked npm package @micropython/micropython-webassembly-pyscript
// (its micropython.mjs and micropython.wasm); FW_DIR the .mpy tree the probe
// imports, copied into the build's in-memory filesystem at /fw. Called by
// `python -m bench.heap32`, which says how to get the package.
import { readFileSync, readdirSync, statSync } from "node:fs";
import { join, resolve } from "node:path";
import { pathToFileURL } from "node:url";

const [pkgDir, fwDir, probePath, heapArg] = process.argv.slice(2);
if (!pkgDir || !fwDir || !probePath) {
  console.error("usage: node bench/heap32.mjs PACKAGE_DIR FW_DIR PROBE_PY [HEAP_BYTES]");
  process.exit(2);
}
const { loadMicroPython } = await import(pathToFileURL(resolve(pkgDir, "micropython.mjs")));
const mp = await loadMicroPython({
  heapsize: Number(heapArg || 1024 * 1024),
  stdout: (line) => process.stdout.write(line + "\n"),
  stderr: (line) => process.stderr.write(line + "\n"),
});

function copyTree(src, dst) {
  mp.FS.mkdir(dst);
  for (const name of readdirSync(src)) {
    const path = join(src, name);
    if (statSync(path).isDirectory()) {
      copyTree(path, dst + "/" + name);
    } else if (name.endsWith(".mpy")) {
      mp.FS.writeFile(dst + "/" + name, readFileSync(path));
    }
  }
}
copyTree(fwDir, "/fw");
mp.FS.mkdir("/flash");

const probe = readFileSync(probePath, "utf8");
try {
  // Each call returns to JavaScript, where the wasm build collects its garbage.
  mp.runPython('_ARGS = ["/fw", "/flash"]\n_DRIVEN = True\n' + probe);
  const work = mp.globals.get("work");
  const measure = mp.globals.get("measure");
  const n = mp.globals.get("N_STAGES");
  for (let i = 0; i < n; i++) {
    work(i);
    measure(i);
  }
} catch (err) {
  console.error("heap32.mjs: the probe failed: " + err);
  process.exit(1);
}
