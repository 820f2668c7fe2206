"""porta-bench's rows between devices and processes, run by CTest (tests/CMakeLists.txt).

    test_bench_multi_device.py PORTA_BENCH MPIEXEC OUT_DIR

Bad sizes are refused; a tiny peer_copy run on two CPU devices (PORTA_CPU_DEVICES=2) and a tiny all_reduce run under
`MPIEXEC -n 2`: both exit 0, only rank 0 prints the table and writes the JSON, the records have
porta-bench's fields (tools/bench/README.md) with positive rates, and an all-reduce's bus
bandwidth is its algorithm bandwidth times 2 (n - 1) / n, as nccl-tests defines it.

Exit 0: passed; anything else: failed.
"""
import json
import math
import os
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from test_bench import HEADER_FIELDS, RECORD_FIELDS, check, finish, has_type  # noqa: E402

SIZES = ["64KiB", "256KiB"]


def run(cmd, env):
    full_env = dict(os.environ)
    full_env.update(env)
    p = subprocess.run(cmd, capture_output=True, text=True, env=full_env, timeout=120)
    print(f"$ {' '.join(cmd)}\n{p.stderr}{p.stdout}")
    return p


def load(path, where):
    check(os.path.exists(path), f"{where}: JSON written")
    if not os.path.exists(path):
        finish()
    with open(path, encoding="utf-8") as f:
        doc = json.load(f)
    for field, kind in HEADER_FIELDS.items():
        check(field in doc and has_type(doc[field], kind), f"{where}: header field {field}")
    check(doc.get("schema") == "porta-bench/2", f"{where}: schema is porta-bench/2")
    records = doc.get("records", [])
    check([r.get("shape") for r in records] == SIZES, f"{where}: one record per size, in order")
    for i, r in enumerate(records):
        for field, kind in RECORD_FIELDS.items():
            check(field in r and has_type(r[field], kind),
                  f"{where}: records[{i}].{field} is {kind}, got {r.get(field)!r}")
        check(r.get("status") == "ok", f"{where}: records[{i}] measured ({r.get('message')})")
        if r.get("status") != "ok":
            continue
        check(r["reps"] == 3, f"{where}: --reps is honoured")
        check(0 < r["min_ms"] <= r["median_ms"] <= r["max_ms"], f"{where}: min <= median <= max")
        check(r["bytes"] == {"64KiB": 65536, "256KiB": 262144}[r["shape"]], f"{where}: bytes")
        check(r["gbps"] > 0 and math.isclose(r["gbps"], r["bytes"] / (r["median_ms"] * 1e6),
                                             rel_tol=1e-6), f"{where}: gbps from the median")
        check(r["max_rel_err"] == 0, f"{where}: the result is exact ({r['max_rel_err']})")
    return records


def test_peer_copy(bench, out_dir):
    out_json = os.path.join(out_dir, "peer_copy.json")
    if os.path.exists(out_json):
        os.remove(out_json)
    args = [bench, "--backend", "cpu", "--op", "peer_copy", "--reps", "3", "--json", out_json]
    for size in SIZES:
        args += ["--shape", size]
    p = run(args, {"PORTA_CPU_DEVICES": "2"})
    check(p.returncode == 0, f"peer_copy exits 0 (got {p.returncode})")
    check("peer_copy" in p.stdout and "64KiB" in p.stdout, "the table shows the peer_copy rows")
    for r in load(out_json, "peer_copy.json"):
        check(r["op"] == "peer_copy" and r["backend"] == "cpu", "peer_copy on cpu")
        # CPU devices share memory: porta_device_can_access_peer says direct.
        check(r["impl"] == "direct", f"the CPU's devices copy directly (impl {r['impl']})")
        check(" -> " in r["device"], "the record names both devices")

    # One device: skipped with the reason, nothing measured.
    p = run([bench, "--backend", "cpu", "--op", "peer_copy", "--shape", "4KiB", "--reps", "1"],
            {"PORTA_CPU_DEVICES": "1"})
    check(p.returncode != 0 and "PORTA_CPU_DEVICES=2" in p.stderr,
          "with one device peer_copy says why nothing was measured")


def test_all_reduce(bench, mpiexec, out_dir):
    out_json = os.path.join(out_dir, "all_reduce.json")
    if os.path.exists(out_json):
        os.remove(out_json)
    ranks = 2
    args = [mpiexec, "-n", str(ranks), bench, "--backend", "cpu", "--op", "all_reduce", "--reps",
            "3", "--json", out_json]
    for size in SIZES:
        args += ["--shape", size]
    p = run(args, {"PORTA_COMM_TIMEOUT": "60"})
    check(p.returncode == 0, f"all_reduce under {mpiexec} -n {ranks} exits 0 (got {p.returncode})")
    check(p.stdout.count("median ms") == 1, "only rank 0 prints the table")
    for r in load(out_json, "all_reduce.json"):
        check(r["op"] == "all_reduce" and r["impl"] == "mpi", "all_reduce on the MPI engine")
        check(r.get("ranks") == ranks, f"ranks is {ranks} (got {r.get('ranks')})")
        algbw, busbw = r.get("algbw_gbps"), r.get("busbw_gbps")
        check(has_type(algbw, (int, float)) and algbw > 0, "algbw_gbps > 0")
        check(has_type(busbw, (int, float)) and busbw > 0, "busbw_gbps > 0")
        if has_type(algbw, (int, float)) and has_type(busbw, (int, float)):
            check(math.isclose(algbw, r["gbps"], rel_tol=1e-9), "algbw_gbps is gbps")
            check(math.isclose(busbw, algbw * 2 * (ranks - 1) / ranks, rel_tol=1e-9),
                  "busbw = algbw * 2 (n - 1) / n")


def test_arguments(bench):
    for args, needle in [(["--op", "all_reduce", "--shape", "6"], "4 bytes"),
                         (["--op", "peer_copy", "--shape", "1TB"], "BYTES"),
                         (["--op", "peer_copy", "--shape", "0KiB"], "BYTES is 0"),
                         (["--op", "peer_copy", "--shape", "1MiBKiB"], "BYTES"),
                         (["--op", "all_reduce", "--dtype", "bf16"], "fp32")]:
        p = run([bench] + args, {})
        check(p.returncode != 0 and needle in p.stdout + p.stderr,
              f"'{' '.join(args)}' is refused, saying '{needle}'")
        check("[1/" not in p.stderr, f"'{' '.join(args)}' measures nothing")


def main():
    if len(sys.argv) != 4:
        print(__doc__)
        sys.exit(2)
    bench, mpiexec, out_dir = sys.argv[1:]
    os.makedirs(out_dir, exist_ok=True)
    test_arguments(bench)
    test_peer_copy(bench, out_dir)
    test_all_reduce(bench, mpiexec, out_dir)
    finish()


if __name__ == "__main__":
    main()
