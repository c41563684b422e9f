#!/usr/bin/env python3
"""Checks docker/Dockerfile without Docker (docker is not available to the tests).

1. The build stage configures and builds from exactly the files it copies: its COPY lines
   (minus .dockerignore) are copied into an empty scratch directory laid out like the
   image (WORKDIR included) and its RUN lines other than apt-get are run there as written.
2. Every header the compiler read, every library the linker used and every tool CMake
   found comes from a package the build stage installs (or a dependency of one, or the
   base image's required packages): `dpkg -S` names the owner of each file.
3. Every shared library the built binary loads (`ldd`), and the HEALTHCHECK's program, come
   from the runtime stage's packages (with their dependencies and the base image's).
4. The binary the runtime stage copies exists at the path it copies from and runs.

Usage: dockerfile_check.py SOURCE_DIR SCRATCH_DIR
"""
import os
import re
import shutil
import subprocess
import sys

src, scratch = os.path.abspath(sys.argv[1]), os.path.abspath(sys.argv[2])
errors = []


def fail(msg):
    errors.append(msg)
    print("FAIL:", msg)


# --- parse -----------------------------------------------------------------------------
def instructions(path):
    """(keyword, arguments) per instruction, continuation lines joined, comments dropped."""
    out, cur = [], ""
    for line in open(path):
        s = line.rstrip("\n")
        if not cur and (not s.strip() or s.lstrip().startswith("#")):
            continue
        if s.lstrip().startswith("#"):
            continue  # comment inside a continued instruction
        if s.endswith("\\"):
            cur += s[:-1] + " "
            continue
        cur += s
        kw, _, rest = cur.strip().partition(" ")
        out.append((kw.upper(), rest.strip()))
        cur = ""
    return out


stages = []  # {"name", "base", "ins": [...]}
for kw, rest in instructions(os.path.join(src, "docker/Dockerfile")):
    if kw == "FROM":
        m = re.match(r"(\S+)(?:\s+AS\s+(\S+))?", rest, re.I)
        stages.append({"base": m.group(1), "name": m.group(2) or str(len(stages)), "ins": []})
    else:
        stages[-1]["ins"].append((kw, rest))


def apt_packages(stage):
    pkgs = []
    for kw, rest in stage["ins"]:
        if kw != "RUN":
            continue
        for part in re.split(r"&&|;", rest):
            words = part.split()
            if len(words) > 2 and words[0] == "apt-get" and "install" in words:
                pkgs += [w for w in words[words.index("install") + 1:] if not w.startswith("-")]
    return pkgs


runtime = stages[-1]
from_refs = [re.search(r"--from=(\S+)", rest).group(1) for kw, rest in runtime["ins"]
             if kw == "COPY" and "--from=" in rest]
build = next(s for s in stages if s["name"] in from_refs)

# --- packages and their dependency closure ----------------------------------------------
db = {}  # package -> (deps, provides, base)
provides = {}
q = subprocess.run(["dpkg-query", "-W", "-f",
                    "${Package}\t${Provides}\t${Depends}, ${Pre-Depends}\t${Essential}\t${Priority}\t${Status}\n"],
                   capture_output=True, text=True, check=True).stdout
for line in q.splitlines():
    name, prov, deps, essential, priority, status = line.split("\t")
    if "installed" not in status.split():
        continue
    alts = [[re.sub(r"[\s(:].*", "", a.strip()) for a in d.split("|")] for d in deps.split(",") if d.strip()]
    db[name] = (alts, essential == "yes" or priority == "required")
    for p in prov.split(","):
        p = re.sub(r"[\s(].*", "", p.strip())
        if p:
            provides.setdefault(p, []).append(name)


def closure(roots):
    seen, todo = set(), list(roots)
    while todo:
        p = todo.pop()
        for real in [p] + provides.get(p, []):
            if real in seen or real not in db:
                continue
            seen.add(real)
            for alt in db[real][0]:
                todo += alt  # every installed alternative may be the one apt picks
    return seen


base = closure([p for p, (_, b) in db.items() if b])
for stage, pkgs in ((build, apt_packages(build)), (runtime, apt_packages(runtime))):
    missing = [p for p in pkgs if p not in db]
    if missing:
        fail(f"stage {stage['name']} installs packages this machine lacks, so it cannot be checked: {missing}")
build_pkgs = closure(apt_packages(build)) | base
runtime_pkgs = closure(apt_packages(runtime)) | base

# path -> package, from dpkg's file lists (one `dpkg -S` per file is far too slow).
owners = {}
info = "/var/lib/dpkg/info"
for f in os.listdir(info):
    if f.endswith(".list"):
        pkg = f[:-5].split(":")[0]
        for line in open(os.path.join(info, f), errors="replace"):
            owners.setdefault(line.rstrip("\n"), pkg)


def owner(path):
    """The package owning `path`, trying its real path and the /usr-merged aliases."""
    candidates = [path, os.path.realpath(path)]
    for p in list(candidates):
        candidates.append(p[4:] if p.startswith("/usr/") else "/usr" + p)
    for p in candidates:
        if p in owners:
            return owners[p]
    return None


# --- 1. build from exactly the copied files -----------------------------------------------
ignore = []
di = os.path.join(src, ".dockerignore")
if os.path.exists(di):
    for line in open(di):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("!"):
            fail(".dockerignore exceptions (!) are not understood by this check")
        rx = re.escape(line.strip("/")).replace(r"\*\*/", "(.*/)?").replace(r"\*\*", ".*")
        rx = rx.replace(r"\*", "[^/]*").replace(r"\?", "[^/]")
        ignore.append(re.compile(rx + "$"))


def ignored(rel):
    parts = rel.split("/")
    return any(rx.match("/".join(parts[:i])) for rx in ignore for i in range(1, len(parts) + 1))


if os.path.exists(scratch):
    shutil.rmtree(scratch)
root = os.path.join(scratch, "root")
workdir = "/"
copied = 0
env = dict(os.environ)
# ccache (when the machine has it) hits the main build's objects: same relative paths.
env.setdefault("CCACHE_BASEDIR", os.path.dirname(src))
for kw, rest in build["ins"]:
    if kw == "WORKDIR":
        workdir = os.path.join(workdir, rest)
        os.makedirs(root + workdir, exist_ok=True)
    elif kw == "COPY":
        args = [a for a in rest.split() if not a.startswith("--")]
        *sources, dest = args
        dest_abs = os.path.normpath(os.path.join(workdir, dest))
        for s in sources:
            path = os.path.join(src, s)
            if not os.path.exists(path):
                fail(f"COPY {s}: no such file in the build context")
                continue
            if os.path.isdir(path):
                for d, _, files in os.walk(path):
                    for f in files:
                        rel = os.path.relpath(os.path.join(d, f), src)
                        if ignored(rel):
                            continue
                        to = root + os.path.join(dest_abs, os.path.relpath(os.path.join(d, f), path))
                        os.makedirs(os.path.dirname(to), exist_ok=True)
                        shutil.copy2(os.path.join(d, f), to)
                        copied += 1
            else:
                to = root + (os.path.join(dest_abs, s) if dest.endswith("/") else dest_abs)
                os.makedirs(os.path.dirname(to), exist_ok=True)
                shutil.copy2(path, to)
                copied += 1
    elif kw == "RUN" and "apt-get" not in rest:
        print(f"build stage, in {workdir}: RUN {rest}", flush=True)
        # At the lowest CPU priority: make test runs this beside the real-client scenarios.
        r = subprocess.run(["nice", "-n", "19", "bash", "-c", rest], cwd=root + workdir, env=env,
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        if r.returncode != 0:
            print(r.stdout[-6000:])
            fail(f"build stage RUN failed ({r.returncode}): {rest}")
            sys.exit(1)
print(f"build stage: {copied} files copied, RUN lines succeeded")

# --- 4. the binary the runtime stage takes --------------------------------------------------
binaries = []
for kw, rest in runtime["ins"]:
    if kw == "COPY" and "--from=" in rest:
        args = [a for a in rest.split() if not a.startswith("--")]
        for s in args[:-1]:
            p = root + s
            if not os.path.isfile(p):
                fail(f"runtime stage copies {s} from the build stage, which did not produce it")
            else:
                binaries.append(p)
for b in binaries:
    r = subprocess.run([b, "--version"], capture_output=True, text=True)
    if r.returncode != 0:
        fail(f"{os.path.basename(b)} --version exited {r.returncode}")

# --- 2. everything the build used comes from the build stage's packages ------------------------
used = set()
build_dir = None
for d, _, files in os.walk(root):
    for f in files:
        if f.endswith(".o.d"):
            text = open(os.path.join(d, f)).read().replace("\\\n", " ")
            used.update(t for t in text.split()[1:] if t.startswith("/") and not t.startswith(scratch))
        if f == "CMakeCache.txt":
            build_dir = d
if not used:
    fail("no compiler dependency files (.o.d) found: nothing was compiled?")
if build_dir:
    for line in open(os.path.join(build_dir, "CMakeCache.txt")):
        m = re.match(r"([A-Za-z_]+):FILEPATH=(/\S+)$", line.strip())
        # ccache is optional (find_program), the image builds without it.
        if m and m.group(1) != "CCACHE_PROGRAM" and os.path.exists(m.group(2)):
            used.add(m.group(2))
    for d, _, files in os.walk(build_dir):
        if "link.txt" in files:
            for tok in open(os.path.join(d, "link.txt")).read().split():
                if tok.startswith("/") and not tok.startswith(scratch) and os.path.isfile(tok):
                    used.add(tok)
                elif tok.startswith("-l"):
                    for libdir in ("/usr/lib/x86_64-linux-gnu", "/usr/lib/aarch64-linux-gnu", "/usr/lib"):
                        if os.path.exists(f"{libdir}/lib{tok[2:]}.so"):
                            used.add(f"{libdir}/lib{tok[2:]}.so")
                            break
unowned, outside = [], {}
for f in sorted(used):
    p = owner(f)
    if p is None:
        unowned.append(f)
    elif p not in build_pkgs:
        outside.setdefault(p, f)
for p, f in outside.items():
    fail(f"the build used {f} from package {p}, which the build stage does not install")
if unowned:
    fail(f"the build used files no package owns: {unowned[:5]}")
print(f"build stage: {len(used)} headers, libraries and tools checked against its packages")

# --- 3. the runtime stage has every library the binary loads -----------------------------------
for b in binaries:
    out = subprocess.run(["ldd", b], capture_output=True, text=True, check=True).stdout
    libs = re.findall(r"=>\s+(/\S+)", out)
    if "not found" in out:
        fail(f"ldd {b}: a library is not found")
    for lib in libs:
        p = owner(lib)
        if p is None:
            fail(f"{os.path.basename(b)} loads {lib}, which no package owns")
        elif p not in runtime_pkgs:
            fail(f"{os.path.basename(b)} loads {lib} from package {p}, which the runtime stage does not install")
    print(f"runtime stage: {len(libs)} libraries {os.path.basename(b)} loads checked against its packages")
for kw, rest in runtime["ins"]:
    if kw == "HEALTHCHECK":
        prog = rest.split(" CMD ", 1)[1].split()[0]
        where = shutil.which(prog)
        if not where or owner(where) not in runtime_pkgs:
            fail(f"HEALTHCHECK runs {prog}, which the runtime stage does not install")

if errors:
    print(f"{len(errors)} problem(s) in docker/Dockerfile")
    sys.exit(1)
shutil.rmtree(scratch)
print("ok: docker/Dockerfile builds from what it copies and its runtime stage has what the binary needs")
