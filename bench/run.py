"""Run the benchmark suite and write BENCHMARKS.md and bench/results.json.

    .venv/bin/python -m bench.run [--quick] [--only NAME ...] [--list]

Each benchmark module (bench/NAME.py) exposes `run(quick: bool) -> list[Figure]`
(bench/report.py). Every module runs in a child process of its own: the benches
start daemons, namespaces and os-ken apps that are process-global, a crash or a
hang in one must not take the others with it, and a timeout ends only that child
(SIGTERM first, so its context managers remove what it created). Results are
written after every module, so an interrupted run keeps what it measured. With
--only, the other modules' previous results stay in the files. Most benches need
root (namespaces, OVS); `scale` and `encode_bench` do not.
"""

from __future__ import annotations

import argparse
import json
import signal
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path
from types import FrameType

from bench import report

# The order of the suite and of BENCHMARKS.md: pure compute first, then the
# switch, the API, the end-to-end paths, the data plane. Modules not listed that
# define `run(quick` are run after these.
ORDER = (
    "scale",
    "encode_bench",
    "flow_install",
    "echo_readback",
    "capacity",
    "snapshot_load",
    "rest_load",
    "port_activation",
    "libvirt_bench",
    "lb_bench",
    "takeover",
    "migration",
    "diagnose",
    "iperf",
)
# Per module, seconds before the child is stopped; --quick halves it.
TIMEOUT_S = 420.0
BENCH_DIR = Path(__file__).resolve().parent


def suite_modules() -> list[str]:
    """The modules with a `run(quick` entry point, in suite order."""
    found = {
        path.stem
        for path in BENCH_DIR.glob("*.py")
        if path.stem not in {"run", "report"} and "\ndef run(quick" in path.read_text()
    }
    return [n for n in ORDER if n in found] + sorted(found - set(ORDER))


def _stop_on_sigterm() -> None:
    def raise_exit(signum: int, frame: FrameType | None) -> None:
        raise SystemExit(f"stopped by signal {signum}")

    signal.signal(signal.SIGTERM, raise_exit)


def child(name: str, quick: bool, out: Path) -> int:
    """In the child process: run one module, write its figures (or its error) to `out`."""
    _stop_on_sigterm()
    import importlib

    try:
        module = importlib.import_module(f"bench.{name}")
        figures = module.run(quick)
        payload = {"figures": [f.to_json() for f in figures], "status": "ok", "error": ""}
    except BaseException as error:  # recorded as the module's error
        traceback.print_exc()
        text = f"{type(error).__name__}: {error}".strip()
        payload = {"figures": [], "status": "failed", "error": text.splitlines()[-1][:500]}
    out.write_text(json.dumps(payload))
    return 0 if payload["status"] == "ok" else 1


def run_one(name: str, quick: bool, timeout: float) -> report.BenchResult:
    result = report.BenchResult(
        name=name, date=report.now(), commit=report.git_commit(), quick=quick,
        machine=report.machine(),
    )  # fmt: skip
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="ofab-bench-run-") as tmp:
        out = Path(tmp) / "figures.json"
        command = [sys.executable, "-m", "bench.run", "--child", name, "--out", str(out)]
        if quick:
            command.append("--quick")
        process = subprocess.Popen(command, cwd=report.REPO, start_new_session=True)
        try:
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
            result.status, result.error = "failed", f"stopped after the {timeout:.0f} s timeout"
        result.seconds = time.perf_counter() - start
        if out.exists():
            payload = json.loads(out.read_text())
            result.figures = [report.Figure.from_json(f) for f in payload["figures"]]
            if result.status == "ok":
                result.status, result.error = payload["status"], payload["error"]
        elif result.status == "ok":
            result.status = "failed"
            result.error = f"the child exited with {process.returncode} and no figures"
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer repeats, smaller sizes")
    parser.add_argument("--only", action="append", metavar="NAME", help="run only this module")
    parser.add_argument("--list", action="store_true", help="list the suite's modules")
    parser.add_argument("--timeout", type=float, help=f"seconds per module ({TIMEOUT_S:.0f})")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        raise SystemExit(child(args.child, args.quick, args.out))

    modules = suite_modules()
    if args.list:
        print("\n".join(modules))
        return
    selected = modules
    if args.only:
        unknown = sorted(set(args.only) - set(modules))
        if unknown:
            parser.error(f"no such benchmark: {', '.join(unknown)} (have: {', '.join(modules)})")
        selected = [m for m in modules if m in args.only]
    timeout = args.timeout or (TIMEOUT_S / 2 if args.quick else TIMEOUT_S)

    start = time.perf_counter()
    outcomes: dict[str, report.BenchResult] = {}
    for name in selected:
        print(f"=== bench.{name}{' --quick' if args.quick else ''}", flush=True)
        result = outcomes[name] = run_one(name, args.quick, timeout)
        # Read again right before writing: another run (--only) may have written meanwhile.
        results, suite = report.load_results(), report.load_suite()
        results[name] = result
        for figure in result.figures:
            ratio = f"  ratio {figure.ratio:.3g}x" if figure.ratio is not None else ""
            print(f"  {figure.metric}: {report.number(figure.ours)} {figure.unit}{ratio}")
        print(f"=== bench.{name}: {result.status} in {result.seconds:.0f} s"
              f"{': ' + result.error if result.error else ''}", flush=True)  # fmt: skip
        report.save_results(results, suite)
        report.write_markdown(results, suite, modules)
    if not args.only:
        results = {**report.load_results(), **outcomes}
        suite = {
            "date": report.now(), "commit": report.git_commit(), "quick": args.quick,
            "machine": report.machine(), "seconds": time.perf_counter() - start,
            "modules": selected,
        }  # fmt: skip
        report.save_results(results, suite)
        report.write_markdown(results, suite, modules)
    total = time.perf_counter() - start
    failed = [n for n in selected if outcomes[n].status != "ok"]
    print(f"suite: {len(selected)} benchmarks in {total / 60:.1f} min; "
          f"failed: {', '.join(failed) or 'none'}")  # fmt: skip
    raise SystemExit(1 if failed else 0)


if __name__ == "__main__":
    main()
