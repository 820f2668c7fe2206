#!/usr/bin/env python3
"""Resource budgets of the GPU kernel libraries, checked without a GPU.

cuda KEEP_DIR... : for the PTX nvcc kept while building each fatbin (one file per architecture,
    told apart by its .target), runs ptxas -v as the build did (sm_<arch>) and for the
    newest architecture this ptxas knows (the PTX the fatbin ships is what the driver compiles
    for GPUs newer than its SASS), and asserts for every kernel: no spills, no stack or local
    memory, static shared memory within the 48 KiB a kernel may declare, at most 255 registers,
    and registers x its largest launched group (.maxntid, from PORTA_KERNEL_MAX_GROUP; else the
    1024 every device allows) within the 64 Ki-register file of an SM, at the allocation
    granularity (8 registers per thread, 256 per warp).
hip LIBRARY_BASE... : for each <base>.hip-<arch>.hsaco of every --arch, reads the AMDGPU code
    object metadata (llvm-readelf --notes) and asserts: the code object exists for each
    architecture and is for that architecture, its code-object version is --code-object-version,
    and every kernel has no SGPR or VGPR spills and no private segment (scratch).
Prints one line per kernel library and architecture; exits 1 listing every violation.
"""
import argparse
import glob
import os
import re
import subprocess
import sys

REGISTER_FILE = 65536        # 32-bit registers per SM, sm_80 to sm_12x
STATIC_SHARED_LIMIT = 48 * 1024
MAX_REGISTERS = 255
DEFAULT_GROUP = 1024


def max_groups(ptx_text):
    """Each entry's .maxntid product, or DEFAULT_GROUP."""
    groups = {}
    for match in re.finditer(r"\.entry\s+(\w+)\s*\((.*?)\)\s*(.*?)\{", ptx_text, re.S):
        name, directives = match.group(1), match.group(3)
        bound = re.search(r"\.maxntid\s+(\d+)\s*,\s*(\d+)\s*,\s*(\d+)", directives)
        groups[name] = (int(bound.group(1)) * int(bound.group(2)) * int(bound.group(3))
                        if bound else DEFAULT_GROUP)
    return groups


def ptxas_usage(ptxas, ptx, arch):
    """{kernel: {registers, spill_stores, spill_loads, stack, local, shared}} from ptxas -v."""
    result = subprocess.run([ptxas, "-v", "-O3", f"-arch=sm_{arch}", ptx, "-o", os.devnull],
                            capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(f"ptxas -arch=sm_{arch} {ptx} failed:\n{result.stderr[-2000:]}")
    usage, current = {}, None
    for line in result.stderr.splitlines():
        m = re.search(r"(?:Compiling entry function|Function properties for) '?(\w+)'?", line)
        if m:
            current = usage.setdefault(m.group(1), {"registers": 0, "spill_stores": 0,
                                                    "spill_loads": 0, "stack": 0, "local": 0,
                                                    "shared": 0})
            continue
        if current is None:
            continue
        if m := re.search(r"(\d+) bytes stack frame, (\d+) bytes spill stores, (\d+) bytes spill "
                          r"loads", line):
            current["stack"], current["spill_stores"], current["spill_loads"] = map(int, m.groups())
        if m := re.search(r"Used (\d+) registers", line):
            current["registers"] = int(m.group(1))
        if m := re.search(r"(\d+) bytes lmem", line):
            current["local"] = int(m.group(1))
        if m := re.search(r"(\d+) bytes smem", line):
            current["shared"] = int(m.group(1))
    return usage


def newest_architecture(ptxas):
    """The highest plain sm_ number ptxas accepts (its --help lists them)."""
    text = subprocess.run([ptxas, "--help"], capture_output=True, text=True).stdout
    numbers = [int(n) for n in re.findall(r"'sm_(\d+)'", text)]
    if not numbers:
        raise RuntimeError("ptxas --help lists no sm_ architecture")
    return max(numbers)


def registers_allocated(registers, group):
    per_thread = -(-registers // 8) * 8
    per_warp = -(-per_thread * 32 // 256) * 256
    return per_warp * -(-group // 32)


def check_cuda(args):
    problems = []
    newest = newest_architecture(args.ptxas)
    for keep in args.inputs:
        arch_of = {}  # the PTX nvcc kept for each architecture, by its .target
        for path in sorted(glob.glob(os.path.join(keep, "*.ptx"))):
            with open(path) as f:
                target = re.search(r"^\.target\s+sm_(\d+)", f.read(), re.M)
            if target:
                arch_of[int(target.group(1))] = path
        if not arch_of:
            problems.append(f"{keep}: no PTX kept (is nvcc run with --keep?)")
            continue
        runs = [(arch, path) for arch, path in sorted(arch_of.items())]
        highest = max(arch_of)
        if newest > highest:
            runs.append((newest, arch_of[highest]))  # the shipped PTX, compiled for the newest
        library = os.path.basename(keep).removesuffix(".cuda.keep")
        for arch, ptx in runs:
            with open(ptx) as f:
                groups = max_groups(f.read())
            try:
                usage = ptxas_usage(args.ptxas, ptx, arch)
            except RuntimeError as error:
                problems.append(str(error))
                continue
            missing = set(groups) - set(usage)
            if missing:
                problems.append(f"{library} sm_{arch}: ptxas reported nothing for {sorted(missing)}")
            worst = 0
            for kernel, u in sorted(usage.items()):
                where = f"{library} sm_{arch} {kernel}"
                group = groups.get(kernel, DEFAULT_GROUP)
                if u["spill_stores"] or u["spill_loads"]:
                    problems.append(f"{where}: spills ({u['spill_stores']} bytes stored, "
                                    f"{u['spill_loads']} loaded)")
                if u["stack"] or u["local"]:
                    problems.append(f"{where}: {u['stack']} bytes stack, {u['local']} bytes local")
                if u["shared"] > STATIC_SHARED_LIMIT:
                    problems.append(f"{where}: {u['shared']} bytes static shared memory")
                if u["registers"] > MAX_REGISTERS:
                    problems.append(f"{where}: {u['registers']} registers")
                allocated = registers_allocated(u["registers"], group)
                worst = max(worst, allocated)
                if allocated > REGISTER_FILE:
                    problems.append(f"{where}: {u['registers']} registers x {group} work-items = "
                                    f"{allocated} allocated > {REGISTER_FILE}; declare a smaller "
                                    f"group (PORTA_KERNEL_MAX_GROUP)")
            print(f"cuda {library} sm_{arch}{' (shipped PTX)' if arch not in arch_of else ''}: "
                  f"{len(usage)} kernels, at most {max((u['registers'] for u in usage.values()), default=0)}"
                  f" registers, largest allocation {worst}/{REGISTER_FILE}")
    return problems


def check_hip(args):
    problems = []
    expected_abi = {4: 2, 5: 3, 6: 4}[args.code_object_version]  # ELFABIVERSION_AMDGPU_HSA_V*
    for base in args.inputs:
        library = os.path.basename(base)
        for arch in args.arch:
            path = f"{base}.hip-{arch}.hsaco"
            if not os.path.isfile(path):
                problems.append(f"{library}: no code object for {arch} ({path})")
                continue
            result = subprocess.run([args.readelf, "--file-headers", "--notes", path],
                                    capture_output=True, text=True)
            if result.returncode != 0:
                problems.append(f"{path}: {args.readelf} failed: {result.stderr.strip()}")
                continue
            text = result.stdout
            abi = re.search(r"ABI Version:\s+(\d+)", text)
            if not abi or int(abi.group(1)) != expected_abi:
                problems.append(f"{path}: ELF ABI version {abi.group(1) if abi else '?'}, not "
                                f"{expected_abi} (code object v{args.code_object_version})")
            target = re.search(r"amdhsa\.target:\s+'?amdgcn-amd-amdhsa--([\w]+)", text)
            if not target or target.group(1) != arch:
                problems.append(f"{path}: code object for {target.group(1) if target else '?'}, "
                                f"not {arch}")
            counted = 0
            for block in re.split(r"\n  - ", text.split("amdhsa.kernels:", 1)[-1]):
                name = re.search(r"^    \.name:\s+(\S+)", "    " + block, re.M)
                if not name or ".symbol:" not in block:
                    continue
                counted += 1
                values = {key: int(value) for key, value in re.findall(
                    r"\.(sgpr_spill_count|vgpr_spill_count|private_segment_fixed_size):\s+(\d+)",
                    block)}
                for key in ("sgpr_spill_count", "vgpr_spill_count", "private_segment_fixed_size"):
                    if key not in values:
                        problems.append(f"{library} {arch} {name.group(1)}: no .{key} in metadata")
                    elif values[key]:
                        problems.append(f"{library} {arch} {name.group(1)}: .{key} {values[key]}")
            if counted == 0:
                problems.append(f"{path}: no kernels in the code object metadata")
            print(f"hip {library} {arch}: {counted} kernels, code object "
                  f"v{args.code_object_version}")
    return problems


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("kind", choices=["cuda", "hip"])
    parser.add_argument("inputs", nargs="+")
    parser.add_argument("--ptxas", default="ptxas")
    parser.add_argument("--readelf", default="llvm-readelf")
    parser.add_argument("--arch", action="append", default=[])
    parser.add_argument("--code-object-version", type=int, default=4)
    args = parser.parse_args()
    problems = check_cuda(args) if args.kind == "cuda" else check_hip(args)
    for problem in problems:
        print(f"FAIL {problem}")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
