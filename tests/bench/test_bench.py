"""Tests of porta-bench and plot-bench, run by CTest (tests/CMakeLists.txt).

    test_bench.py args  PORTA_BENCH          bad arguments: a message, a non-zero exit, nothing run
    test_bench.py run   PORTA_BENCH OUT_DIR  a tiny run: JSON against the schema of
                                             tools/bench/README.md, CSV with its header
    test_bench.py busy  PORTA_BENCH OUT_DIR  a run beside a spinning process per core: other
                                             processes' share of the CPU time seen, busy warned
    test_bench.py dtype PORTA_BENCH OUT_DIR  bf16 GEMM: measured or a clear "unsupported" row
    test_bench.py plot  PLOT_BENCH OUT_DIR   plot-bench on the run's JSON makes a PNG; bad input
                                             is refused with a message
    test_bench.py baselines PORTA_BENCH OUT_DIR
                                             gemm, conv and bias_bwd: a row per vendor library
                                             the plugin has (and oneDNN's blocked rows), in turn,
                                             vs vendor against the fastest, the load average
                                             recorded; GB/s rated against a copy of each row's
                                             own buffers
    test_bench.py numerics PORTA_BENCH BACKEND OUT_DIR
                                             small shapes of three ops on cpu and BACKEND: both
                                             measured, and their results agree (timings are not
                                             judged: PoCL's are not a GPU's)
    test_bench.py vectorised KERNELS_SO      the peak probes' CPU build (x86-64-v3 or -v4) runs
                                             packed FMAs and vector copies: the dialect's inner
                                             loops vectorised

Exit 0: passed; 77: skipped (the reason on stdout); anything else: failed.
"""
import csv
import json
import math
import os
import re
import subprocess
import sys

SKIP = 77
failures = []


def check(condition, what):
    if not condition:
        failures.append(what)
        print(f"FAILED: {what}")


def finish():
    if failures:
        print(f"{len(failures)} check(s) failed")
        sys.exit(1)
    print("passed")
    sys.exit(0)


def run(cmd, env=None):
    full_env = dict(os.environ)
    full_env.update(env or {})
    return subprocess.run(cmd, capture_output=True, text=True, env=full_env, timeout=300)


# ---- bad arguments ----------------------------------------------------------------------------

BAD_ARGUMENTS = [
    (["--op", "matmul"], "matmul"),
    (["--impl", "fastest"], "fastest"),
    (["--impl", "portable,fastest"], "fastest"),
    (["--backend", "metal"], "metal"),
    (["--dtype", "f64"], "f64"),
    (["--suite", "huge"], "huge"),
    (["--reps", "0"], "--reps"),
    (["--reps", "many"], "--reps"),
    (["--op", "gemm", "--shape", "1,2"], "M,N,K"),
    (["--op", "gemm", "--shape", "64x64"], "gemm"),
    (["--op", "gemm", "--shape", "4,4,4,NX"], "NX"),
    (["--op", "gemm", "--shape", "4,0,4"], "N is 0"),
    (["--op", "gemm", "--shape", "4,-4,4"], "N is -4"),
    (["--op", "conv_fwd", "--shape", "8,8,3"], "11 integers"),
    (["--op", "conv_bwd_data", "--shape", "4,4,3,1,8,9,9,0,0,1,1"], "larger than"),
    (["--op", "softmax", "--shape", "64x"], "COLS"),
    (["--op", "cross_entropy", "--shape", "64,64"], "ROWSxCOLS"),
    (["--op", "max_pool", "--shape", "1,2,8,8"], "7 integers"),
    (["--op", "max_pool_bwd", "--shape", "1,2,8,8,2,2,2"], "smaller than the window"),
    (["--op", "bias_add", "--shape", "64x32"], "NxCxS"),
    (["--op", "adam", "--shape", "0"], "COUNT is 0"),
    (["--op", "relu", "--dtype", "bf16"], "fp32"),
    (["--shape", "64x64"], "--op"),
    (["--op", "softmax", "--dtype", "bf16"], "fp32"),
    (["--unknown-flag"], "unknown-flag"),
    (["--csv", "/nonexistent-dir/out.csv"], "does not exist"),
    (["--reps", "0x10"], "decimal"),  # CLI11 alone would read 16
]


def test_args(bench):
    for args, needle in BAD_ARGUMENTS:
        out_json = os.path.join(os.environ.get("TMPDIR", "/tmp"), f"porta-bench-args-{os.getpid()}.json")
        if os.path.exists(out_json):
            os.remove(out_json)
        p = run([bench] + args + ["--json", out_json])
        text = p.stdout + p.stderr
        label = " ".join(args)
        check(p.returncode != 0, f"'{label}' exits non-zero (got {p.returncode})")
        check(needle in text, f"'{label}' says what is wrong (looked for '{needle}' in: {text.strip()!r})")
        check("measuring" not in text and "[1/" not in text, f"'{label}' measures nothing")
        check(not os.path.exists(out_json), f"'{label}' writes no JSON")
    # One file for both outputs: the CSV would overwrite the JSON.
    same = os.path.join(os.environ.get("TMPDIR", "/tmp"), f"porta-bench-same-{os.getpid()}.out")
    p = run([bench, "--op", "relu", "--shape", "1024", "--json", same, "--csv", same])
    check(p.returncode != 0 and "same file" in p.stdout + p.stderr,
          "--json and --csv naming one file are refused")
    check(not os.path.exists(same), "nothing is written to it")
    spelled = os.path.join(os.path.dirname(same), ".", os.path.basename(same))
    p = run([bench, "--op", "relu", "--shape", "1024", "--json", same, "--csv", spelled])
    check(p.returncode != 0 and "same file" in p.stdout + p.stderr,
          "--json and --csv naming one file in two spellings are refused")
    check(not os.path.exists(same), "nothing is written to it")
    # Operands that would take most of the memory are refused at once, with their size.
    p = run([bench, "--backend", "cpu", "--impl", "portable", "--op", "adam", "--shape",
             "2147483647", "--reps", "1"])
    check(p.returncode != 0 and "MiB, more than half the device's" in p.stdout + p.stderr,
          f"a shape too large for the memory is refused ({(p.stdout + p.stderr).strip()[-300:]!r})")
    finish()


# ---- the tiny run and its JSON and CSV ----------------------------------------------------------

NUMBER = (int, float)
HEADER_FIELDS = {
    "schema": str, "porta_version": str, "date": str, "machine": dict, "settings": dict,
    "load": dict, "libraries": list, "peaks": list, "skipped": list, "records": list,
}
RECORD_FIELDS = {
    "op": str, "shape": str, "dtype": str, "backend": str, "device": str, "impl": str,
    "status": str, "message": str, "median_ms": (NUMBER, None), "min_ms": (NUMBER, None),
    "max_ms": (NUMBER, None), "reps": int, "warmup": int, "sets": int, "flops": (NUMBER, None),
    "bytes": NUMBER, "gflops": (NUMBER, None), "gbps": (NUMBER, None),
    "pct_peak": (NUMBER, None), "copy_gbps": (NUMBER, None), "ratio_to_vendor": (NUMBER, None),
    "max_rel_err": (NUMBER, str, None), "error_metric": str, "kind": str,
    "best_vendor": (str, None), "interleaved": list, "times_ms": list, "started_s": list,
}
CSV_HEADER = [f for f in RECORD_FIELDS if f not in ("interleaved", "times_ms", "started_s")]


def has_type(value, kind):
    kinds = kind if isinstance(kind, tuple) else (kind,)
    flat = []
    for k in kinds:
        flat.extend(k if isinstance(k, tuple) else (k,))
    if value is None:
        return None in flat
    if isinstance(value, bool):
        return False
    return any(k is not None and isinstance(value, k) for k in flat)


def validate(doc, where):
    """Checks doc against the schema of tools/bench/README.md."""
    for field, kind in HEADER_FIELDS.items():
        check(field in doc and has_type(doc[field], kind), f"{where}: header field {field}")
    if failures:
        return
    check(doc["schema"] == "porta-bench/2", f"{where}: schema is porta-bench/2")
    check(re.fullmatch(r"\d+\.\d+\.\d+", doc["porta_version"]) is not None, f"{where}: porta_version")
    check(re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", doc["date"]) is not None, f"{where}: date")
    m = doc["machine"]
    check(isinstance(m.get("cpu"), str) and m["cpu"], f"{where}: machine.cpu")
    check(isinstance(m.get("cores"), int) and m["cores"] >= 1, f"{where}: machine.cores")
    check(isinstance(m.get("os"), str) and m["os"], f"{where}: machine.os")
    for key in ("suite", "impl", "dtype", "reps"):
        check(key in doc["settings"], f"{where}: settings.{key}")
    for lib in doc["libraries"]:
        for key in ("name", "kind", "outcome", "abi", "version", "path"):
            check(isinstance(lib.get(key), str), f"{where}: libraries[].{key} of {lib.get('name')}")
        check(lib.get("kind") in ("backend", "ops"), f"{where}: libraries[].kind")
    check(any(l["name"] == "cpu" and l["outcome"] == "loaded" for l in doc["libraries"]),
          f"{where}: the loader report lists the cpu backend as loaded")
    check(len(doc["peaks"]) >= 1, f"{where}: a peak per device")
    for p in doc["peaks"]:
        check(isinstance(p.get("backend"), str) and isinstance(p.get("device"), str),
              f"{where}: peaks[].backend, device")
        check(isinstance(p.get("architecture"), str) and isinstance(p.get("compute_units"), int),
              f"{where}: peaks[].architecture, compute_units")
        check("clock_mhz" in p and has_type(p["clock_mhz"], (int, None)), f"{where}: peaks[].clock_mhz")
        for key in ("fma_gflops", "copy_gbps"):
            check(has_type(p.get(key), NUMBER) and p[key] > 0, f"{where}: peaks[].{key} > 0")
        for key in ("bf16", "f16"):
            check(has_type(p.get(f"{key}_gflops"), (NUMBER, None)), f"{where}: peaks[].{key}_gflops")
            check(isinstance(p.get(f"{key}_source"), str) and p[f"{key}_source"],
                  f"{where}: peaks[].{key}_source says where the 16-bit peak comes from")
    load = doc["load"]
    for key in ("start", "end"):
        check(isinstance(load.get(key), list) and len(load[key]) == 3
              and all(has_type(v, NUMBER) and v >= 0 for v in load[key]),
              f"{where}: load.{key} holds /proc/loadavg's three averages, got {load.get(key)!r}")
    check(has_type(load.get("busy_above"), NUMBER) and load["busy_above"] == 0.5 * m["cores"],
          f"{where}: load.busy_above is half the cores")
    others = load.get("others_share")
    check(others is None or (has_type(others, NUMBER) and 0 <= others <= 1),
          f"{where}: load.others_share is a share of the CPU time or null, got {others!r}")
    check(has_type(load.get("others_busy_above"), NUMBER) and 0 < load["others_busy_above"] < 1,
          f"{where}: load.others_busy_above is a share")
    if not failures:
        # The other processes' share decides; where it is unknown, the start's load average (the
        # end's counts the run's own threads).
        if others is None:
            busy = load["start"][0] > load["busy_above"]
        else:
            busy = others > load["others_busy_above"]
        check(load.get("busy") is busy, f"{where}: load.busy ({load.get('busy')}) follows the "
              "other processes' share, else the start's load")
    for i, r in enumerate(doc["records"]):
        for field, kind in RECORD_FIELDS.items():
            check(field in r and has_type(r[field], kind),
                  f"{where}: records[{i}].{field} is {kind}, got {r.get(field)!r}")
        check(r.get("status") in ("ok", "unsupported", "error"), f"{where}: records[{i}].status")
        check(r.get("kind") in ("portable", "vendor"), f"{where}: records[{i}].kind")
        check(r.get("impl") in r.get("interleaved", []),
              f"{where}: records[{i}].interleaved lists the record's own implementation")
        if r.get("status") == "ok":
            check(len(r.get("times_ms", [])) == r["reps"] == len(r.get("started_s", [])),
                  f"{where}: records[{i}] has a time and a start per repetition")


def test_run(bench, out_dir):
    os.makedirs(out_dir, exist_ok=True)
    out_json = os.path.join(out_dir, "tiny.json")
    out_csv = os.path.join(out_dir, "tiny.csv")
    for path in (out_json, out_csv):
        if os.path.exists(path):
            os.remove(path)
    p = run([bench, "--backend", "cpu", "--op", "gemm", "--shape", "64,48,32,NT", "--reps", "3",
             "--json", out_json, "--csv", out_csv])
    print(p.stderr)
    print(p.stdout)
    if p.returncode != 0 and "cannot initialise Porta" in p.stderr and not os.environ.get("PORTA_TEST_CPU_BUILT"):
        print("skipped: the CPU backend is not usable here: " + p.stderr.strip())
        sys.exit(SKIP)
    check(p.returncode == 0, f"the tiny run exits 0 (got {p.returncode})")
    check("gemm" in p.stdout and "64,48,32,NT" in p.stdout, "the table on stdout shows the shape")
    check("median ms" in p.stdout and "% peak" in p.stdout, "the table has its columns")
    check(os.path.exists(out_json) and os.path.exists(out_csv), "JSON and CSV written")
    if failures:
        finish()
    with open(out_json, encoding="utf-8") as f:
        doc = json.load(f)
    validate(doc, "tiny.json")
    records = doc["records"]
    portable = [r for r in records if r["impl"] == "portable"]
    check(len(portable) == 1, "one portable record")
    for r in records:
        check(r["op"] == "gemm" and r["shape"] == "64,48,32,NT" and r["dtype"] == "f32",
              "the record names op, shape and dtype as asked")
        check(r["backend"] == "cpu", "the record is for the cpu backend")
        if r["status"] != "ok":
            continue
        check(r["reps"] == 3, "--reps is honoured")
        check(r["sets"] == 1024, f"a case far smaller than the cache rotates 1024 sets (got {r['sets']})")
        check(0 < r["min_ms"] <= r["median_ms"] <= r["max_ms"], "min <= median <= max")
        check(r["flops"] == 2 * 64 * 48 * 32, "flops = 2 M N K")
        check(math.isclose(r["gflops"], r["flops"] / (r["median_ms"] * 1e6), rel_tol=1e-6),
              "gflops from the median")
        check(r["gbps"] is None, "gemm is rated in GFLOP/s only")
        check(r["pct_peak"] is not None and r["pct_peak"] > 0, "% of peak is given")
        check(r["error_metric"] == "normwise", "gemm's error is normwise")
    vendor = [r for r in records if r["kind"] == "vendor" and r["status"] == "ok"]
    if vendor:
        # Several implementations: each is compared with the others, and they must agree.
        for r in records:
            check(r["max_rel_err"] is not None and r["max_rel_err"] <= 1e-3,
                  f"{r['impl']} agrees with the other implementation ({r['max_rel_err']})")
        check(all(r["ratio_to_vendor"] is not None for r in records), "ratio to vendor given")
    else:
        check(any("vendor" in s for s in doc["skipped"]) or doc["settings"]["impl"] != "all",
              "a vendor implementation not measured is listed in skipped, with its reason")
        check(portable and portable[0]["max_rel_err"] is None,
              "with nothing to compare, max_rel_err is null")
    with open(out_csv, newline="", encoding="utf-8") as f:
        rows = list(csv.reader(f))
    check(rows and rows[0] == CSV_HEADER, f"the CSV header is {CSV_HEADER}, got {rows[:1]}")
    check(len(rows) == len(records) + 1, "one CSV row per record")
    for row, r in zip(rows[1:], records):
        check(len(row) == len(CSV_HEADER), "every CSV row has every field")
        fields = dict(zip(CSV_HEADER, row))
        check(fields.get("shape") == r["shape"] and fields.get("impl") == r["impl"],
              "CSV rows match the JSON records")
        if r["status"] == "ok":
            check(math.isclose(float(fields["median_ms"]), r["median_ms"], rel_tol=1e-6),
                  "the CSV median matches the JSON")
    # One file named twice, relative and absolute, is refused before the run.
    here = os.path.dirname(out_json)
    p = subprocess.run([bench, "--backend", "cpu", "--op", "gemm", "--shape", "8,8,8",
                        "--json", out_json, "--csv", os.path.join(here, ".", "tiny.json")],
                       capture_output=True, text=True, timeout=300)
    check(p.returncode > 0 and "names the same file" in p.stderr,
          f"--csv naming --json's file is refused (got {p.returncode}: {p.stderr.strip()})")
    # A table that cannot reach stdout is a failure, not a silent success.
    with open("/dev/full", "w", encoding="utf-8") as full:
        p = subprocess.run([bench, "--backend", "cpu", "--op", "gemm", "--shape", "8,8,8",
                            "--reps", "2"], stdout=full, stderr=subprocess.PIPE, text=True,
                           timeout=300)
    check(p.returncode == 1 and "cannot write to standard output" in p.stderr,
          f"a full stdout fails the run (got {p.returncode}: {p.stderr.strip()[-200:]})")
    finish()


def checked_document(p, out_json, what):
    """Prints a run's output, checks that it exited 0, and returns its JSON, validated."""
    print(p.stderr)
    print(p.stdout)
    check(p.returncode == 0, f"{what} exits 0 (got {p.returncode})")
    if failures:
        finish()
    with open(out_json, encoding="utf-8") as f:
        doc = json.load(f)
    validate(doc, os.path.basename(out_json))
    return doc


def test_busy(bench, out_dir):
    """A run that shares the cores with other work, a spinning process per core, says so."""
    os.makedirs(out_dir, exist_ok=True)
    out_json = os.path.join(out_dir, "busy.json")
    spinners = [subprocess.Popen([sys.executable, "-c", "while True: pass"])
                for _ in range(os.cpu_count() or 1)]
    try:
        p = run([bench, "--backend", "cpu", "--impl", "portable", "--op", "gemm", "--shape",
                 "256,256,256", "--reps", "200", "--json", out_json])
    finally:
        for s in spinners:
            s.kill()
            s.wait()
    doc = checked_document(p, out_json, "the run")
    others = doc["load"]["others_share"]
    check(others is not None and others > doc["load"]["others_busy_above"],
          f"the spinning processes' share of the CPU time is seen (got {others!r})")
    check(doc["load"]["busy"], "the run is marked busy")
    check("other processes took" in p.stderr and "WARNING" in p.stdout,
          "the busy run is warned of on stderr and in the table")
    finish()


def test_dtype(bench, out_dir):
    os.makedirs(out_dir, exist_ok=True)
    out_json = os.path.join(out_dir, "bf16.json")
    p = run([bench, "--backend", "cpu", "--op", "gemm", "--shape", "40,24,72", "--dtype", "bf16",
             "--impl", "portable", "--reps", "2", "--json", out_json])
    doc = checked_document(p, out_json, "a bf16 run, whether or not bf16 is supported,")
    check(len(doc["records"]) == 1, "one record")
    for r in doc["records"]:
        check(r["dtype"] == "bf16", "the record says bf16")
        check(r["status"] in ("ok", "unsupported"), f"status ok or unsupported, got {r['status']}")
        if r["status"] == "ok":
            peak = doc["peaks"][0]
            flags = cpu_flags()
            if "amx_bf16" in flags:
                check(not peak["bf16_gflops"] and r["pct_peak"] is None
                      and "matrix units" in peak["bf16_source"],
                      "with AMX the bf16 peak is not measured, said so, and no row gets a "
                      "percentage of it")
            else:
                check(peak["bf16_gflops"] is not None and math.isclose(
                    r["pct_peak"], 100 * r["gflops"] / peak["bf16_gflops"], rel_tol=1e-6),
                    "bf16 rows are rated against the bf16 peak")
                if "avx512_bf16" in flags:
                    check(math.isclose(peak["bf16_gflops"], 2 * peak["fma_gflops"],
                                       rel_tol=1e-9) and "vdpbf16ps" in peak["bf16_source"],
                          "with AVX512_BF16 the bf16 peak is twice the fp32 FMA peak, said so")
                else:
                    check(peak["bf16_gflops"] == peak["fma_gflops"]
                          and "fp32" in peak["bf16_source"],
                          "without AVX512_BF16 the bf16 peak is the fp32 one, said so")
        if r["status"] == "unsupported":
            check("UNSUPPORTED" in r["message"], "an unsupported dtype says so")
            check(r["median_ms"] is None and r["gflops"] is None, "nothing measured is null")
            check("unsupported" in p.stdout, "the table shows the row as unsupported")
    finish()


def cpu_flags():
    with open("/proc/cpuinfo", encoding="utf-8") as f:
        for line in f:
            if line.startswith("flags"):
                return set(line.split(":", 1)[1].split())
    return set()


def test_baselines(bench, out_dir):
    """Each vendor library its own row, vs vendor against the fastest, timed in turn."""
    os.makedirs(out_dir, exist_ok=True)
    for op, shape in (("gemm", "64,48,32"), ("conv_fwd", "8,8,4,2,8,3,3,1,1,1,1"),
                      ("bias_bwd", "4x8x50")):
        out_json = os.path.join(out_dir, f"baselines-{op}.json")
        if os.path.exists(out_json):
            os.remove(out_json)
        # A library named in the environment must not narrow porta-bench's rows.
        p = run([bench, "--backend", "cpu", "--op", op, "--shape", shape, "--reps", "3",
                 "--json", out_json], env={"PORTA_VENDOR_LIBRARY": "cublas"})
        print(p.stderr)
        print(p.stdout)
        check(p.returncode == 0, f"{op}: exits 0 (got {p.returncode})")
        check("load average" in p.stdout, f"{op}: the table states the load average")
        if p.returncode != 0 or not os.path.exists(out_json):
            continue
        with open(out_json, encoding="utf-8") as f:
            doc = json.load(f)
        validate(doc, f"baselines-{op}.json")
        if doc["load"]["busy"]:
            check("busy" in p.stderr and "WARNING" in p.stdout, f"{op}: a busy machine is warned of")
        records = doc["records"]
        impls = [r["impl"] for r in records]
        check(len(set(impls)) == len(impls), f"{op}: one row per implementation, got {impls}")
        vendor_cpu = next((l for l in doc["libraries"] if l["name"] == "vendor_cpu"), None)
        expected = ["portable"]
        if vendor_cpu and vendor_cpu["outcome"] == "loaded":
            if op == "gemm" and "OpenBLAS" in vendor_cpu["version"]:
                expected.append("openblas")
            if "oneDNN" in vendor_cpu["version"]:
                expected.append("onednn")
        else:
            check(any("vendor ops on cpu" in s for s in doc["skipped"]),
                  f"{op}: the vendor plugin not loaded is listed in skipped")
        if op == "conv_fwd" and not any(s.startswith("onednn-blocked:") for s in doc["skipped"]):
            expected += ["onednn-blocked", "onednn-winograd"]
        check(impls == expected, f"{op}: the rows are {expected}, got {impls}")
        for r in records:
            check(r["status"] == "ok", f"{op} {r['impl']}: measured ({r['status']}: {r['message']})")
            check(r["kind"] == ("portable" if r["impl"] == "portable" else "vendor"),
                  f"{op} {r['impl']}: kind")
            check(r["interleaved"] == impls, f"{op} {r['impl']}: interleaved with {impls}, "
                  f"got {r['interleaved']}")
            if r["status"] != "ok":
                continue
            if r["gbps"] is None:
                check(r["copy_gbps"] is None, f"{op} {r['impl']}: no copy timed for a GFLOP/s row")
            else:
                # bias_bwd's output is too small to hold the copy: it gets a buffer of its own.
                check(r["copy_gbps"] is not None and r["copy_gbps"] > 0,
                      f"{op} {r['impl']}: a copy of its own buffers timed ({r['copy_gbps']})")
                check(r["pct_peak"] is not None and r["copy_gbps"] is not None and math.isclose(
                          r["pct_peak"], 100 * r["gbps"] / r["copy_gbps"], rel_tol=1e-6),
                      f"{op} {r['impl']}: % of peak is against that copy ({r['pct_peak']})")
        if failures:
            continue
        # Timed in turn: repetition i of each implementation, in order, before repetition i + 1.
        starts = [s for i in range(3) for s in (r["started_s"][i] for r in records)]
        check(starts == sorted(starts) and len(set(starts)) == len(starts),
              f"{op}: repetitions start A B C A B C ... ({starts})")
        vendor = [r for r in records if r["kind"] == "vendor"]
        if vendor:
            best = min(vendor, key=lambda r: r["median_ms"])
            for r in records:
                check(r["best_vendor"] == best["impl"], f"{op} {r['impl']}: best_vendor is {best['impl']}")
                check(math.isclose(r["ratio_to_vendor"], best["median_ms"] / r["median_ms"], rel_tol=1e-6),
                      f"{op} {r['impl']}: ratio_to_vendor against the fastest vendor library")
        else:
            check(all(r["ratio_to_vendor"] is None for r in records), f"{op}: no vendor, no ratio")
        for r in records:
            check(r["max_rel_err"] is None if len(records) == 1 else r["max_rel_err"] <= 1e-3,
                  f"{op} {r['impl']}: agrees with the others ({r['max_rel_err']})")
        if op == "gemm" and "onednn" in impls:
            # A list of implementations: those rows only, timed in turn.
            out_json = os.path.join(out_dir, "baselines-list.json")
            p = run([bench, "--backend", "cpu", "--op", op, "--shape", shape, "--reps", "2",
                     "--impl", "onednn,portable", "--json", out_json])
            check(p.returncode == 0, f"--impl onednn,portable: exits 0 (got {p.returncode})")
            if p.returncode == 0:
                with open(out_json, encoding="utf-8") as f:
                    listed = [r["impl"] for r in json.load(f)["records"]]
                check(listed == ["portable", "onednn"],
                      f"--impl onednn,portable: the rows are portable and onednn, got {listed}")
    finish()


# Small shapes of five ops (the implicit-GEMM engine twice, a row op, the one-pass max-pool
# backward, Adam updating in place), so that a CPU-hosted OpenCL run stays short: each run also
# measures both devices' peaks. The op suite checks every op on every backend against float64
# references.
NUMERICS_SHAPES = [
    ("gemm", "96,80,72,NT"),
    ("conv_fwd", "12,12,8,2,16,3,3,1,1,1,1"),
    ("softmax", "64x300"),
    ("max_pool_bwd", "2,3,12,10,2,2,1"),
    ("adam", "5000"),
]


def test_numerics(bench, backend, out_dir):
    os.makedirs(out_dir, exist_ok=True)
    for op, shape in NUMERICS_SHAPES:
        out_json = os.path.join(out_dir, f"numerics-{backend}-{op}.json")
        p = run([bench, "--backend", "cpu", "--backend", backend, "--impl", "portable",
                 "--op", op, "--shape", shape, "--reps", "1", "--json", out_json])
        print(p.stderr)
        check(p.returncode == 0, f"{op} {shape}: exits 0 (got {p.returncode})")
        if p.returncode != 0 or not os.path.exists(out_json):
            continue
        with open(out_json, encoding="utf-8") as f:
            doc = json.load(f)
        by_backend = {r["backend"]: r for r in doc["records"]}
        check(set(by_backend) == {"cpu", backend}, f"{op}: one record per backend")
        for name, r in by_backend.items():
            check(r["status"] == "ok", f"{op} on {name}: measured ({r.get('status')})")
            check(r["max_rel_err"] is not None and r["max_rel_err"] <= 1e-3,
                  f"{op} on {name} agrees with the other backend ({r['max_rel_err']})")
    finish()


def test_plot(plot, out_dir):
    source = os.path.join(out_dir, "tiny.json")
    png = os.path.join(out_dir, "tiny.png")
    if os.path.exists(png):
        os.remove(png)
    p = run([plot, source, "-o", png])
    print(p.stdout + p.stderr)
    if p.returncode == 3:
        print("skipped: " + p.stderr.strip())
        sys.exit(SKIP)
    check(p.returncode == 0, f"plot-bench exits 0 (got {p.returncode})")
    if os.path.exists(png):
        with open(png, "rb") as f:
            check(f.read(8) == b"\x89PNG\r\n\x1a\n", "the output is a PNG")
    else:
        check(False, "the PNG is written")
    # Bad input: a message and a non-zero exit, no PNG.
    bad = os.path.join(out_dir, "bad.json")
    for content, needle in (("{ not json", "not valid JSON"), ('{"records": []}', "schema"),
                            ('{"schema": "porta-bench/1", "records": [{"op": "gemm"}]}', "lacks")):
        with open(bad, "w", encoding="utf-8") as f:
            f.write(content)
        bad_png = os.path.join(out_dir, "bad.png")
        if os.path.exists(bad_png):
            os.remove(bad_png)
        p = run([plot, bad, "-o", bad_png])
        check(p.returncode == 1 and needle in p.stderr,
              f"invalid JSON {content!r} is refused with '{needle}' (got {p.returncode}: {p.stderr!r})")
        check(not os.path.exists(bad_png), "no PNG for invalid input")
    p = run([plot, os.path.join(out_dir, "missing.json")])
    check(p.returncode == 1 and "no such file" in p.stderr, "a missing file is refused")
    finish()


def functions(disassembly):
    """{function label: its instructions} from objdump -d output."""
    out, name = {}, None
    for line in disassembly.splitlines():
        m = re.match(r"^[0-9a-f]+ <(.+)>:$", line)
        if m:
            name = m.group(1)
            out[name] = []
        elif name and "\t" in line:
            out[name].append(line.split("\t", 1)[1].strip())
    return out


def test_vectorised(library):
    try:
        p = run(["objdump", "-d", "--no-show-raw-insn", library])
    except FileNotFoundError:
        print("skipped: objdump (binutils) is not installed")
        sys.exit(SKIP)
    check(p.returncode == 0, f"objdump reads {library}: {p.stderr.strip()}")
    code = functions(p.stdout)
    for kernel, pattern, least in (
            ("peak_fma", r"^vfmadd\d+ps\s.*%[yz]mm", 64),   # the 8 x 64 unrolled body
            ("peak_copy", r"^vmovup[sd]\s.*%[yz]mm", 2)):   # a vector load and store
        body = [i for name, ins in code.items() if kernel in name for i in ins]
        check(body, f"{kernel} is in {library}")
        packed = sum(1 for i in body if re.search(pattern, i))
        scalar = sum(1 for i in body if re.match(r"^vfmadd\d+ss", i)) if kernel == "peak_fma" else 0
        print(f"{kernel}: {packed} packed instructions ({pattern}), {scalar} scalar FMAs")
        check(packed >= least, f"{kernel} vectorises: {packed} packed instructions, want >= {least}")
    finish()


def main():
    if len(sys.argv) < 3:
        print(__doc__)
        sys.exit(2)
    mode, tool = sys.argv[1], sys.argv[2]
    if mode == "args":
        test_args(tool)
    elif mode == "run":
        test_run(tool, sys.argv[3])
    elif mode == "busy":
        test_busy(tool, sys.argv[3])
    elif mode == "dtype":
        test_dtype(tool, sys.argv[3])
    elif mode == "plot":
        test_plot(tool, sys.argv[3])
    elif mode == "baselines":
        test_baselines(tool, sys.argv[3])
    elif mode == "numerics":
        test_numerics(tool, sys.argv[3], sys.argv[4])
    elif mode == "vectorised":
        test_vectorised(tool)
    else:
        print(f"unknown mode {mode}")
        sys.exit(2)


if __name__ == "__main__":
    main()
