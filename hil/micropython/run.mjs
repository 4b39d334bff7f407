// Runs a Python script on the official MicroPython WebAssembly port.
//
//   node run.mjs [--heap BYTES] [--mount HOSTDIR:MPDIR]... SCRIPT.py
//
// Each mount copies the .py, .json and .txt files of HOSTDIR (recursively) into
// the port's in-memory file system at MPDIR; a package (a folder with
// __init__.py) is importable by its name, a folder of modules by theirs.  The script's
// stdout goes to stdout; a Python exception prints its traceback on stderr and
// exits 1 (never the runtime's minified source).
import fs from "node:fs";
import path from "node:path";
import { loadMicroPython } from "@micropython/micropython-webassembly-pyscript";

const args = process.argv.slice(2);
let heap = 16 * 1024 * 1024;
const mounts = [];
let script = null;
for (let i = 0; i < args.length; i++) {
  if (args[i] === "--heap") heap = parseInt(args[++i], 10);
  else if (args[i] === "--mount") mounts.push(args[++i]);
  else script = args[i];
}
if (!script) {
  process.stderr.write("usage: node run.mjs [--heap BYTES] [--mount HOST:MP]... SCRIPT.py\n");
  process.exit(2);
}

const mp = await loadMicroPython({
  heapsize: heap,
  stdout: (line) => process.stdout.write(line + "\n"),
  stderr: (line) => process.stderr.write(line + "\n"),
});

function mkdirs(dir) {
  let sofar = "";
  for (const part of dir.split("/").filter(Boolean)) {
    sofar += "/" + part;
    try { mp.FS.mkdir(sofar); } catch (e) { /* exists */ }
  }
}

function copyTree(hostDir, mpDir) {
  mkdirs(mpDir);
  for (const entry of fs.readdirSync(hostDir, { withFileTypes: true })) {
    const host = path.join(hostDir, entry.name);
    const target = mpDir + "/" + entry.name;
    if (entry.isDirectory()) {
      if (entry.name !== "__pycache__") copyTree(host, target);
    } else if (/\.(py|json|txt)$/.test(entry.name)) {
      mp.FS.writeFile(target, fs.readFileSync(host));
    }
  }
}

const paths = [];
for (const mount of mounts) {
  const at = mount.lastIndexOf(":");
  const hostDir = mount.slice(0, at);
  const mpDir = mount.slice(at + 1);
  copyTree(hostDir, mpDir);
  // A package goes on the path through its parent; a folder of modules itself.
  const isPackage = fs.existsSync(path.join(hostDir, "__init__.py"));
  paths.push(isPackage ? path.posix.dirname(mpDir) : mpDir);
}

const setup = "import sys\n" + paths.map((p) => `sys.path.insert(0, ${JSON.stringify(p)})\n`).join("");
try {
  mp.runPython(setup + fs.readFileSync(script, "utf8"));
} catch (error) {
  if (error.name === "PythonError") {
    process.stderr.write(error.message + "\n");
    process.exit(1);
  }
  throw error;
}
