#!/usr/bin/env python3
"""porta-info --json with PORTA_CPU_DEVICES=2: two CPU devices, each with its pool's figures;
and to a full disk, exit 1."""
import json
import subprocess
import sys

out = subprocess.run([sys.argv[1], "--json"], check=True, capture_output=True, text=True).stdout
report = json.loads(out)
devices = report["devices"]
assert [d["backend"] for d in devices] == ["cpu", "cpu"], devices
for d in devices:
    pool = d["memory_pool"]
    for key in ("bytes_in_use", "bytes_cached", "peak_bytes_in_use", "allocation_count",
                "reuse_count", "release_threshold"):
        assert isinstance(pool[key], int), (key, pool)
    assert pool["bytes_in_use"] == 0 and pool["allocation_count"] == 0, pool
assert report["environment"]["PORTA_CPU_DEVICES"] == "2", report["environment"]
# A report that cannot be written (a full disk) is a failure with a message, not an abort.
with open("/dev/full", "w", encoding="utf-8") as full:
    lost = subprocess.run([sys.argv[1], "--json"], stdout=full, stderr=subprocess.PIPE, text=True)
assert lost.returncode == 1 and "porta-info:" in lost.stderr, (lost.returncode, lost.stderr)
print("porta-info --json: 2 devices with memory_pool figures; a full stdout fails with exit 1")
