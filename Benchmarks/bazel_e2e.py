"""Scenario 3: real Bazel (../shared/bazel-offline/bazel4) on a generated workspace of C and
genrule targets: a cold build with Apus as the remote cache, a rebuild after `bazel clean` from
the warm remote cache, and the same rebuild from Bazel's own --disk_cache as the no-network
reference.

Each run starts a fresh apus (filesystem CAS, memory AC) and a fresh disk cache; one Bazel
server is kept warm for the whole scenario so its start-up is not timed. Rebuilds are repeated:
the first one after a cold build also pays for the JVM compiling Bazel's download path. Every
rebuild must report all of its non-internal processes as cache hits, or the run fails."""
import os
import re
import subprocess
import time

from common import SHARED, Figure, fmt, start_apus

BAZEL4 = os.path.join(SHARED, "bazel-offline", "bazel4")
JOBS = "--jobs=16"  # the same for every build; local actions stay limited by the CPU count


def generate(root, targets):
    """About `targets` targets in 10 packages: 45% cc_library (each with its own header and
    a dependency on the previous one), 10% cc_binary (each linking five libraries), 45% genrule
    (a tree: each reads its parent's output)."""
    libs, bins = max(1, targets * 45 // 100), max(1, targets // 10)
    gens = max(1, targets - libs - bins)
    packages = 10 if targets >= 100 else 1
    build = {p: [] for p in range(packages)}
    os.makedirs(root, exist_ok=True)
    with open(os.path.join(root, "WORKSPACE"), "w") as f:
        f.write('workspace(name = "apus_bench")\n')
    for p in range(packages):
        os.makedirs(os.path.join(root, f"p{p}"), exist_ok=True)

    def label(kind, i):
        return f"//p{i % packages}:{kind}{i}"

    for i in range(libs):
        pkg = os.path.join(root, f"p{i % packages}")
        dep = f"#include \"p{(i - 1) % packages}/lib{i - 1}.h\"\n" if i else ""
        call = f"  acc += lib{i - 1}_value(n);\n" if i else ""
        with open(os.path.join(pkg, f"lib{i}.h"), "w") as f:
            f.write(f"#pragma once\nlong lib{i}_value(long n);\n")
        with open(os.path.join(pkg, f"lib{i}.c"), "w") as f:
            f.write(f"#include \"p{i % packages}/lib{i}.h\"\n{dep}")
            # A few functions of real code, so each compile takes measurable time.
            for k in range(8):
                f.write(f"static long f{k}(long n) {{ long s = {k}; for (long j = 0; j < n; j++) "
                        f"s = s * 31 + (j ^ {i * 8 + k}); return s; }}\n")
            f.write(f"long lib{i}_value(long n) {{\n  long acc = {i};\n{call}")
            f.write("".join(f"  acc += f{k}(n + {k});\n" for k in range(8)))
            f.write("  return acc;\n}\n")
        deps = f', deps = ["{label("lib", i - 1)}"]' if i else ""
        build[i % packages].append(
            f'cc_library(name = "lib{i}", srcs = ["lib{i}.c"], hdrs = ["lib{i}.h"]{deps})')
    for i in range(bins):
        pkg = os.path.join(root, f"p{i % packages}")
        chosen = sorted({(i * 5 + k) % libs for k in range(5)})
        with open(os.path.join(pkg, f"bin{i}.c"), "w") as f:
            f.write("".join(f"#include \"p{j % packages}/lib{j}.h\"\n" for j in chosen))
            f.write("#include <stdio.h>\nint main(void) {\n  long t = 0;\n")
            f.write("".join(f"  t += lib{j}_value(10);\n" for j in chosen))
            f.write('  printf("%ld\\n", t);\n  return 0;\n}\n')
        deps = ", ".join(f'"{label("lib", j)}"' for j in chosen)
        build[i % packages].append(f'cc_binary(name = "bin{i}", srcs = ["bin{i}.c"], deps = [{deps}])')
    for i in range(gens):
        src = f'srcs = ["{label("gen", (i - 1) // 2)}"], ' if i else ""
        read = "cat $(SRCS) | sha256sum; " if i else ""
        build[i % packages].append(
            f'genrule(name = "gen{i}", {src}outs = ["gen{i}.txt"], '
            f'cmd = "({read}seq {i} {i + 20000}) > $@")')
    for p, rules in build.items():
        with open(os.path.join(root, f"p{p}", "BUILD"), "w") as f:
            f.write('package(default_visibility = ["//visibility:public"])\n\n' + "\n".join(rules) + "\n")
    return libs + bins + gens


class Bazel:
    def __init__(self, workspace, output_root):
        self.workspace, self.output_root = workspace, output_root

    def run(self, *args):
        cmd = [BAZEL4, f"--output_user_root={self.output_root}", *args]
        start = time.perf_counter()
        p = subprocess.run(cmd, cwd=self.workspace, capture_output=True, text=True, timeout=1800)
        seconds = time.perf_counter() - start
        if p.returncode != 0:
            raise RuntimeError(f"bazel {' '.join(args)} failed:\n{(p.stdout + p.stderr)[-3000:]}")
        return seconds, p.stdout + p.stderr

    def build(self, *flags):
        self.run("clean")
        return self.run("build", "//...", JOBS, *flags)


def processes(output):
    """(non-internal processes, of which cache hits) from Bazel's `N processes: …` line."""
    line = [l for l in output.splitlines() if re.search(r"\d+ processes?:", l)][-1]
    total = int(re.search(r"(\d+) processes?", line).group(1))
    internal = sum(int(n) for n in re.findall(r"(\d+) internal", line))
    hits = sum(int(n) for n in re.findall(r"(\d+) [a-z ]*cache hit", line))
    return total - internal, hits, line.split("INFO: ", 1)[-1]


def all_hits(output, what):
    work, hits, line = processes(output)
    if work == 0 or hits != work:
        raise RuntimeError(f"{what} was not all cache hits: {line}")
    return line


def run(ctx):
    workspace = os.path.join(ctx.work, "ws")
    count = generate(workspace, ctx.bazel_targets)
    bazel = Bazel(workspace, os.path.join(ctx.work, "bazel-root"))
    # Start the Bazel server and load every package outside the timings, so the first timed
    # build does not pay for them and the rest do not look faster for it.
    bazel.run("build", "--nobuild", "//...")
    cold = Figure("bazel", "cold build, remote cache (empty apus)", "s")
    warm = Figure("bazel", "rebuild after clean, warm remote cache", "s")
    local_cold = Figure("bazel", "cold build, local only (fills --disk_cache)", "s")
    disk = Figure("bazel", "rebuild after clean, local --disk_cache", "s")
    server_cpu = Figure("bazel", "apus CPU time during one warm remote rebuild", "s")
    lines = {}
    try:
        for r in range(ctx.bazel_runs):
            cas = {"filesystem": {"path": os.path.join(ctx.work, f"bazel-cas-{r}"), "max_bytes": 8 << 30}}
            with start_apus(ctx.apus, ctx.work, cas, name=f"apus-bazel-{r}") as server:
                remote = f"--remote_cache=grpc://127.0.0.1:{server.port}"
                seconds, out = bazel.build(remote)
                cold.samples.append(seconds)
                lines["cold"] = processes(out)[2]
                for _ in range(ctx.bazel_rebuilds):
                    cpu0 = server.cpu_seconds()
                    seconds, out = bazel.build(remote)
                    warm.samples.append(seconds)
                    server_cpu.samples.append(server.cpu_seconds() - cpu0)
                    lines["warm"] = all_hits(out, "the warm remote rebuild")
            cache = f"--disk_cache={os.path.join(ctx.work, f'disk-cache-{r}')}"
            seconds, out = bazel.build(cache)
            local_cold.samples.append(seconds)
            for _ in range(ctx.bazel_rebuilds):
                seconds, out = bazel.build(cache)
                disk.samples.append(seconds)
                lines["disk"] = all_hits(out, "the disk-cache rebuild")
    finally:
        bazel.run("shutdown")
    ratio = warm.median / disk.median
    figures = (cold, warm, local_cold, disk, server_cpu)
    rows = [[f.name, fmt(f.min), fmt(f.median), fmt(f.max)] for f in figures]
    for f in figures:
        f.note = f"{count} targets"
        ctx.add(f)
    ctx.ratio("bazel warm remote rebuild / disk-cache rebuild", ratio)
    ctx.table(f"Bazel 4 end to end: {count} generated targets (C libraries, binaries, genrules), "
              f"{ctx.bazel_runs} runs of one cold build and {ctx.bazel_rebuilds} rebuilds each, {JOBS}",
              ["build", "min s", "median s", "max s"], rows,
              [f"warm remote rebuild / disk-cache rebuild: **{ratio:.2f}×**; apus itself used "
               f"{server_cpu.median:.2f} s of CPU per warm rebuild of {warm.median:.2f} s",
               f"cold remote: `{lines['cold']}`", f"warm remote: `{lines['warm']}`",
               f"disk cache: `{lines['disk']}`"])
    ctx.target("warm remote rebuild ≤ 1.2× the local disk-cache rebuild", ratio, 1.2, "×",
               f"{warm.median:.1f} s vs {disk.median:.1f} s", higher_is_better=False)
