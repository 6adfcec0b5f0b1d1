"""REST throughput and latency at 32 concurrent clients: create port and list ports
next to `/healthz` of the same server, in the same run, as the network fills.

    .venv/bin/python -m bench.rest_load [--fill 4000] [--seconds 3] [--repeats 3]
                                        [--backend sqlite|postgresql|both] [--profile DIR]

The service (`ovs-fabric serve`: uvicorn on loopback, the controller and the libvirt
watcher off, so only the API is measured) runs as a child process on a fresh SQLite
file and, when PostgreSQL is at hand (OVS_FABRIC_TEST_POSTGRES_URL, or a throwaway
server started here as root), on a fresh PostgreSQL database too. The load comes
from `wrk` (Debian's package, C, another process): 32 connections over 2 threads,
closed loop, keep-alive, one tenant token.

Per backend, --repeats times: a new network (a /19) is filled with
`POST /ports {"network_id"}` (the service allocates the MAC and the address) in
phases of --seconds until it holds --fill ports; each phase gives a rate and a p99,
so the first and last phases show whether creation slows as the network fills.
Then `GET /ports?network_id=...` (the first page, 100 ports of the full network)
and the peer, `GET /healthz` (no token, one revision read), alternately, 3 runs of
--seconds each.
Last, create and list once more with the clients paced (each waits a random delay,
so that together they offer ~PACED_RATE req/s): latency at a fixed offered load, an
additional figure next to the closed loop's (where p99 < 50 ms needs > 640 req/s).
Figures: medians over the repeats (create: over every phase), spread min-max;
ratio = our req/s / healthz req/s. Goals (issue 11): >= 0.3x, p99 < 50 ms, flat
(last phase >= 0.8x the first). --profile writes a py-spy profile of the server
during the fill and the list of the first repeat.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import secrets
import shutil
import statistics
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx

from api.launcher import ServiceProcess
from api.paths import API_PREFIX, HEALTH_PATH
from bench.report import Figure, measured

CLIENTS = 32
THREADS = 2
GOAL_RATIO = 0.3
GOAL_P99_MS = 50.0
GOAL_FLAT = 0.8
POSTGRES_ENV = "OVS_FABRIC_TEST_POSTGRES_URL"
LIST_ROUNDS = 3  # list and healthz runs after each fill
# The additional, paced figure: latency when the 32 clients offer this rate together
# (each waits 32/rate s on average between requests) instead of a closed loop.
PACED_RATE = 100

# wrk's Lua hooks: the request from the environment, the summary as one JSON line.
WRK_SCRIPT = r"""
wrk.method = os.getenv("BENCH_METHOD")
local body = os.getenv("BENCH_BODY")
if body ~= nil and body ~= "" then
  wrk.body = body
  wrk.headers["Content-Type"] = "application/json"
end
-- Paced runs: each connection waits a random 0..2x BENCH_PACE_MS before each request.
local pace = tonumber(os.getenv("BENCH_PACE_MS") or "")
if pace ~= nil and pace > 0 then
  delay = function() return math.random(0, 2 * pace) end
end
local token = os.getenv("BENCH_TOKEN")
if token ~= nil and token ~= "" then
  wrk.headers["Authorization"] = "Bearer " .. token
end

done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'BENCH_JSON {"requests": %d, "duration_us": %d, "p50_us": %d, "p99_us": %d, '
    .. '"max_us": %d, "status": %d, "connect": %d, "read": %d, "write": %d, '
    .. '"timeout": %d}\n',
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(99),
    latency.max, e.status, e.connect, e.read, e.write, e.timeout))
end
"""


@dataclass(frozen=True)
class Load:
    """What one wrk run measured."""

    requests: int
    seconds: float
    p50_ms: float
    p99_ms: float
    errors: int  # non-2xx answers and socket errors
    server_cpu_s: float = 0.0  # CPU time the server process spent meanwhile

    @property
    def rate(self) -> float:
        return self.requests / self.seconds

    @property
    def cpu_ms_per_request(self) -> float:
        return self.server_cpu_s * 1000 / max(self.requests, 1)


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of process `pid` (all its threads) so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def wrk(
    url: str,
    seconds: int,
    *,
    script: Path,
    server_pid: int,
    method: str = "GET",
    body: str = "",
    token: str = "",
    pace_ms: int = 0,
) -> Load:
    cpu_before = cpu_seconds(server_pid)
    env = {
        **os.environ,
        "BENCH_METHOD": method,
        "BENCH_BODY": body,
        "BENCH_TOKEN": token,
        "BENCH_PACE_MS": str(pace_ms),
    }
    result = subprocess.run(
        [
            "wrk", f"-t{THREADS}", f"-c{CLIENTS}", f"-d{seconds}s", "--timeout", "10s",
            "-s", str(script), url,
        ],
        env=env, capture_output=True, text=True, check=True, timeout=seconds + 60,
    )  # fmt: skip
    line = next(li for li in result.stdout.splitlines() if li.startswith("BENCH_JSON "))
    data = json.loads(line.removeprefix("BENCH_JSON "))
    errors = sum(data[k] for k in ("status", "connect", "read", "write", "timeout"))
    return Load(
        requests=data["requests"],
        seconds=data["duration_us"] / 1e6,
        p50_ms=data["p50_us"] / 1000,
        p99_ms=data["p99_us"] / 1000,
        errors=errors,
        server_cpu_s=cpu_seconds(server_pid) - cpu_before,
    )


@dataclass
class Phase:
    ports_before: int
    load: Load


@dataclass
class Repeat:
    fill: list[Phase]
    listing: list[Load]
    health: list[Load]
    paced: dict[str, Load]  # "create", "list": at PACED_RATE offered


@contextlib.contextmanager
def py_spy(pid: int, out: Path | None) -> Iterator[None]:
    """py-spy recording `pid` (and its threads) while the block runs, when `out` is given."""
    if out is None or (shutil.which("py-spy") is None and not Path(".venv/bin/py-spy").exists()):
        yield
        return
    exe = shutil.which("py-spy") or ".venv/bin/py-spy"
    out.parent.mkdir(parents=True, exist_ok=True)
    spy = subprocess.Popen(
        [exe, "record", "--pid", str(pid), "--rate", "200", "--format", "raw",
         "--output", str(out), "--nonblocking"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        yield
    finally:
        spy.send_signal(2)  # SIGINT: py-spy writes its file and exits
        try:
            spy.wait(timeout=30)
        except subprocess.TimeoutExpired:
            spy.kill()
            spy.wait()


class Bench:
    """The service on one database, a tenant and its token, wrk's script."""

    def __init__(self, service: ServiceProcess, script: Path) -> None:
        self.service = service
        self.script = script
        self.api = service.base_url + API_PREFIX
        admin = {"Authorization": f"Bearer {service.admin_token}"}
        with httpx.Client(base_url=self.api, headers=admin, timeout=30) as http:
            tenant = _ok(http.post("/tenants", json={"name": f"bench-{secrets.token_hex(3)}"}))
            token = _ok(http.post(f"/tenants/{tenant['id']}/tokens", json={"name": "load"}))
        self.token: str = token["token"]
        self.networks = 0

    def new_network(self) -> str:
        self.networks += 1
        n = self.networks
        with self._client() as http:
            net = _ok(http.post("/networks", json={
                "name": f"load{n}", "type": "vxlan", "cidr": f"10.{n}.0.0/19",
            }))  # fmt: skip
        network_id: str = net["id"]
        return network_id

    def _client(self) -> httpx.Client:
        headers = {"Authorization": f"Bearer {self.token}"}
        return httpx.Client(base_url=self.api, headers=headers, timeout=30)

    def count_ports(self, network_id: str) -> int:
        with self._client() as http:
            page = _ok(http.get("/ports", params={"network_id": network_id, "limit": 1}))
        return int(page["total"])

    def repeat(self, fill_to: int, seconds: int, profile: Path | None) -> Repeat:
        network_id = self.new_network()
        body = json.dumps({"network_id": network_id})
        phases: list[Phase] = []
        count = 0
        with py_spy(self.service_pid(), profile):
            while count < fill_to:
                load = wrk(
                    self.api + "/ports", seconds, script=self.script, method="POST",
                    body=body, token=self.token, server_pid=self.service_pid(),
                )  # fmt: skip
                phases.append(Phase(count, load))
                before, count = count, self.count_ports(network_id)
                print(f"  create: {phases[-1].ports_before:5d} -> {count:5d} ports "
                      f"{load.rate:7.1f} req/s  p99 {load.p99_ms:7.1f} ms  "
                      f"server CPU {load.cpu_ms_per_request:5.2f} ms/req  "
                      f"errors {load.errors}", flush=True)  # fmt: skip
                if count == before:
                    raise RuntimeError(f"no port was created in {seconds} s")
            listing: list[Load] = []
            health: list[Load] = []
            # Alternated, so drifting load on a shared machine hits both alike.
            for _ in range(LIST_ROUNDS):
                listing.append(wrk(
                    f"{self.api}/ports?network_id={network_id}", seconds, script=self.script,
                    token=self.token, server_pid=self.service_pid(),
                ))  # fmt: skip
                health.append(wrk(
                    self.service.base_url + HEALTH_PATH, seconds, script=self.script,
                    server_pid=self.service_pid(),
                ))  # fmt: skip
                for label, load in (("list", listing[-1]), ("healthz", health[-1])):
                    print(
                        f"  {label} ({count} ports): {load.rate:7.1f} req/s  "
                        f"p99 {load.p99_ms:7.1f} ms  "
                        f"server CPU {load.cpu_ms_per_request:5.2f} ms/req",
                        flush=True,
                    )
            pace_ms = CLIENTS * 1000 // PACED_RATE
            paced = {
                "create": wrk(
                    self.api + "/ports", 2 * seconds, script=self.script, method="POST",
                    body=body, token=self.token, server_pid=self.service_pid(), pace_ms=pace_ms,
                ),
                "list": wrk(
                    f"{self.api}/ports?network_id={network_id}", 2 * seconds,
                    script=self.script, token=self.token, server_pid=self.service_pid(),
                    pace_ms=pace_ms,
                ),
            }  # fmt: skip
            for label, load in paced.items():
                print(
                    f"  {label} paced (~{PACED_RATE} req/s offered): {load.rate:7.1f} req/s  "
                    f"p50 {load.p50_ms:6.1f} ms  p99 {load.p99_ms:7.1f} ms",
                    flush=True,
                )
        return Repeat(phases, listing, health, paced)

    def service_pid(self) -> int:
        process = self.service._process
        assert process is not None
        return process.pid


def _ok(response: httpx.Response) -> dict[str, object]:
    response.raise_for_status()
    result: dict[str, object] = response.json()
    return result


@contextlib.contextmanager
def postgres_database() -> Iterator[str | None]:
    """A fresh, empty PostgreSQL database's URL, or None when none can be had."""
    url = os.environ.get(POSTGRES_ENV)
    if url:
        import psycopg
        from sqlalchemy.engine import make_url

        name = f"ofab_rest_{secrets.token_hex(4)}"
        admin_url = make_url(url).set(drivername="postgresql")
        dsn = admin_url.render_as_string(hide_password=False)
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute(f"CREATE DATABASE {name}")
        try:
            yield make_url(url).set(database=name).render_as_string(hide_password=False)
        finally:
            with psycopg.connect(dsn, autocommit=True) as conn:
                conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        return
    if os.geteuid() != 0 or not Path("/usr/lib/postgresql").is_dir():
        yield None
        return
    from tests.support.postgres import running_postgres

    with running_postgres() as server:
        yield server.url


@contextlib.contextmanager
def running_api(workdir: Path, database_url: str | None) -> Iterator[ServiceProcess]:
    env = {"OVS_FABRIC_CONTROLLER_ENABLED": "false", "OVS_FABRIC_LIBVIRT_ENABLED": "false"}
    if database_url is not None:
        env["OVS_FABRIC_DATABASE_URL"] = database_url
    service = ServiceProcess(workdir, extra_env=env)
    service.start(timeout=60)
    try:
        yield service
    finally:
        service.stop()


def measure(
    backend: str, *, fill_to: int, seconds: int, repeats: int, profile: Path | None
) -> list[Repeat]:
    with contextlib.ExitStack() as stack:
        workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="ofab-rest-")))
        url = None
        if backend == "postgresql":
            url = stack.enter_context(postgres_database())
            if url is None:
                return []
        script = workdir / "bench.lua"
        script.write_text(WRK_SCRIPT)
        service = stack.enter_context(running_api(workdir / "service", url))
        bench = Bench(service, script)
        results = []
        for i in range(repeats):
            print(f"{backend}, repeat {i + 1} of {repeats}", flush=True)
            spy = profile / f"rest-{backend}.txt" if profile is not None and i == 0 else None
            results.append(bench.repeat(fill_to, seconds, spy))
        return results


def figures(backend: str, repeats: list[Repeat], fill_to: int) -> list[Figure]:
    health = [h.rate for r in repeats for h in r.health]
    health_p99 = [h.p99_ms for r in repeats for h in r.health]
    phases = [p for r in repeats for p in r.fill]
    create_rate = [p.load.rate for p in phases]
    create_p99 = [p.load.p99_ms for p in phases]
    # The phases of the first and of the last quarter of each fill: single phases
    # swing with the shared machine's load.
    first = [p.load.rate for p in phases if p.ports_before < fill_to / 4] or [create_rate[0]]
    last = [p.load.rate for p in phases if p.ports_before >= fill_to * 3 / 4] or [create_rate[-1]]
    listing = [x.rate for r in repeats for x in r.listing]
    listing_p99 = [x.p99_ms for r in repeats for x in r.listing]
    errors = sum(p.load.errors for p in phases) + sum(x.errors for r in repeats for x in r.listing)
    cpu = {
        "create": statistics.median(p.load.cpu_ms_per_request for p in phases),
        "list": statistics.median(x.cpu_ms_per_request for r in repeats for x in r.listing),
        "healthz": statistics.median(h.cpu_ms_per_request for r in repeats for h in r.health),
    }
    cpu_note = "server CPU per request: " + ", ".join(f"{k} {v:.2f} ms" for k, v in cpu.items())
    peer = f"GET /healthz, same server ({statistics.median(health_p99):.1f} ms p99)"
    where = f"{backend}, {CLIENTS} clients"
    flat = statistics.median(last) / statistics.median(first)
    error_note = f"; {errors} non-2xx or socket errors" if errors else ""
    create = measured(
        f"POST /ports ({where}, 0 -> {fill_to:,} ports)", "req/s", create_rate,
        peer=peer, peer_values=health, goal=f">= {GOAL_RATIO}x",
        notes=f"median over {len(phases)} phases of the fills{error_note}; {cpu_note}",
    )  # fmt: skip
    list_ports = measured(
        f"GET /ports, first page of {fill_to:,} ({where})", "req/s", listing,
        peer=peer, peer_values=health, goal=f">= {GOAL_RATIO}x",
    )  # fmt: skip
    paced = [
        measured(
            f"{what} p99 at ~{PACED_RATE} req/s offered ({backend}, {CLIENTS} clients paced)",
            "ms",
            [r.paced[kind].p99_ms for r in repeats],
            notes="additional to the closed loop: each client waits a random 0-"
            f"{2 * CLIENTS * 1000 // PACED_RATE} ms between requests; reached "
            + ", ".join(f"{r.paced[kind].rate:.0f}" for r in repeats)
            + " req/s, p50 "
            + ", ".join(f"{r.paced[kind].p50_ms:.1f}" for r in repeats)
            + " ms",
        )
        for kind, what in (("create", "POST /ports"), ("list", "GET /ports"))
    ]
    return [
        _judged(create, create.ratio is not None and create.ratio >= GOAL_RATIO),
        measured(
            f"POST /ports p99 ({where})",
            "ms",
            create_p99,
            goal=f"< {GOAL_P99_MS:.0f} ms",
            met=statistics.median(create_p99) < GOAL_P99_MS,
            notes="median of the phases' p99s; max is the worst phase",
        ),
        Figure(
            f"POST /ports, last quarter of the fill / first quarter ({backend})",
            "x",
            flat,
            peer=None,
            goal=f">= {GOAL_FLAT}x (flat as the network fills)",
            met=flat >= GOAL_FLAT,
            notes=f"median of the phases: first quarter {statistics.median(first):.0f} req/s "
            f"(n={len(first)}), last quarter {statistics.median(last):.0f} req/s (n={len(last)})",
        ),
        _judged(list_ports, list_ports.ratio is not None and list_ports.ratio >= GOAL_RATIO),
        measured(
            f"GET /ports p99 ({where})",
            "ms",
            listing_p99,
            goal=f"< {GOAL_P99_MS:.0f} ms",
            met=statistics.median(listing_p99) < GOAL_P99_MS,
        ),
        *paced,
    ]


def _judged(figure: Figure, met: bool) -> Figure:
    from dataclasses import replace

    return replace(figure, met=met)


def run(quick: bool) -> list[Figure]:
    """The suite's entry point (bench/run.py): one fill per backend (its phases are the
    create samples); PostgreSQL to 1,000 ports only, to keep the suite's time (its
    allocation is the same code: flatness is shown on SQLite to 4,000)."""
    fills = {"sqlite": 1000 if quick else 4000, "postgresql": 500 if quick else 1000}
    found: list[Figure] = []
    for backend, fill_to in fills.items():
        measured_repeats = measure(backend, fill_to=fill_to, seconds=2, repeats=1, profile=None)
        if measured_repeats:
            found += figures(backend, measured_repeats, fill_to)
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--fill", type=int, default=4000)
    parser.add_argument("--seconds", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--backend", choices=("sqlite", "postgresql", "both"), default="both")
    parser.add_argument("--profile", type=Path, help="write py-spy profiles into this directory")
    args = parser.parse_args()
    backends = ("sqlite", "postgresql") if args.backend == "both" else (args.backend,)
    for backend in backends:
        repeats = measure(
            backend, fill_to=args.fill, seconds=args.seconds, repeats=args.repeats,
            profile=args.profile,
        )  # fmt: skip
        if not repeats:
            print(f"{backend}: no database available, skipped")
            continue
        for figure in figures(backend, repeats, args.fill):
            ratio = f"  = {figure.ratio:.2f}x the peer" if figure.ratio is not None else ""
            verdict = "" if figure.met is None else ": met" if figure.met else ": NOT met"
            print(f"{figure.metric}: {figure.ours:.1f} {figure.unit}{ratio}  "
                  f"goal {figure.goal or '-'}{verdict}")  # fmt: skip
            if figure.notes:
                print(f"    {figure.notes}")


if __name__ == "__main__":
    main()
