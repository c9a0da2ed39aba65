"""Ack latency of `/aia pods` under load while Kubernetes answers slowly.

Starts `aia-bot serve` as a process against the local Slack and Kubernetes
servers (Kubernetes delayed by --kube-delay seconds) and a database, sends
--concurrency signed slash commands at once, --rounds times, and reports the
ack latency (p50/p99/max), how long until every answer reached Slack, and the
serve process's peak RSS (VmHWM).

In the same run, each round is also sent to a bare Bolt app (bench/bare_bolt_app.py: the
same Starlette + Bolt + uvicorn stack with a listener that only acks), and the ratio of
aia-bot's ack latency to the bare app's is printed (goal: p99 ratio <= 1.25), with the event
loop's CPU per ack of both (the main thread's run time while a round is acked). The bare app
and aia-bot take turns, so both see the same machine.

    .venv/bin/python bench/ack_latency.py [--concurrency 50] [--rounds 5] [--kube-delay 2] [--database URL]
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sandbox.aia_seed import seed_aia_system  # noqa: E402
from sandbox.kube_server import FakeKubeAPIServer  # noqa: E402
from sandbox.slack_server import FakeSlackServer  # noqa: E402
from tests.harness.bot_process import BotProcess, slash_body  # noqa: E402
from tests.harness.users import TEAM_ID, install_users  # noqa: E402


def percentile(values: list[float], pct: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(pct / 100 * len(ordered)) - 1))
    return ordered[index]


def _raw_request(host: str, path: str, body: str, headers: dict[str, str]) -> bytes:
    lines = [f"POST {path} HTTP/1.1", f"Host: {host}", f"Content-Length: {len(body.encode())}"]
    lines += [f"{k}: {v}" for k, v in headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body.encode()


async def _read_response(reader: asyncio.StreamReader) -> int:
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    length = 0
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            length = int(line.split(b":", 1)[1])
    await reader.readexactly(length)
    return status


async def _burst(url: str, signed: list[tuple[str, dict[str, str]]]) -> list[float]:
    # Plain asyncio streams and pre-built requests: an HTTP client library in the
    # sender costs more per request than the bot's ack and would be measured instead.
    host_port = url.split("://", 1)[1]
    host, port = host_port.split(":")
    connections = [await asyncio.open_connection(host, int(port)) for _ in signed]
    requests = [_raw_request(host_port, "/slack/events", body, headers) for body, headers in signed]

    async def send(conn: tuple[asyncio.StreamReader, asyncio.StreamWriter], raw: bytes) -> float:
        reader, writer = conn
        started = time.perf_counter()
        writer.write(raw)
        status = await _read_response(reader)
        elapsed = time.perf_counter() - started
        assert status == 200, status
        writer.close()
        return elapsed

    return list(await asyncio.gather(*(send(c, r) for c, r in zip(connections, requests, strict=True))))


def burst(url: str, signed: list[tuple[str, dict[str, str]]]) -> list[float]:
    return asyncio.run(_burst(url, signed))


def one_round(bot: BotProcess, slack: FakeSlackServer, concurrency: int, pool: ProcessPoolExecutor) -> list[float]:
    """The sender runs in its own process: the local Slack and Kubernetes servers in this
    one are busy exactly when the acks come back, and must not slow the measurement."""
    bodies = [slash_body("pods", "U0VIEW1", slack.new_response_url()) for _ in range(concurrency)]
    signed = [(body, bot.signed_headers(body)) for body in bodies]
    return pool.submit(burst, bot.url, signed).result()


class BareBoltProcess(BotProcess):
    """bench/bare_bolt_app.py as a process, signed requests as for aia-bot."""

    def start(self, timeout: float = 120) -> BareBoltProcess:
        self._log = open(self.log_path, "ab")  # noqa: SIM115 - closed in stop()
        script = Path(__file__).resolve().parent / "bare_bolt_app.py"
        self.process = subprocess.Popen(  # noqa: S603 - our own script
            [sys.executable, str(script), "--port", str(self.port)], env=self.env,
            stdout=self._log, stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"bare Bolt app exited early:\n{self.log_path.read_text()}")
            try:
                if self.http.get("/healthz").status_code == 200:
                    return self
            except httpx.TransportError:  # not listening yet
                pass
            time.sleep(0.1)
        raise RuntimeError("bare Bolt app did not come up")


def stats(ms: list[float]) -> str:
    return f"p50 {statistics.median(ms):.1f}  p99 {percentile(ms, 99):.1f}  max {max(ms):.1f}"


def cpu_seconds(process: BotProcess) -> float:
    assert process.process is not None
    fields = Path(f"/proc/{process.process.pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def loop_cpu_seconds(process: BotProcess) -> float:
    """CPU time of the process's main thread (the event loop that acks), in ns precision."""
    assert process.process is not None
    pid = process.process.pid
    return int(Path(f"/proc/{pid}/task/{pid}/schedstat").read_text().split()[0]) / 1e9


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--concurrency", type=int, default=50)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--kube-delay", type=float, default=2.0)
    parser.add_argument("--database", default=None, help="DATABASE_URL (default: a SQLite file)")
    parser.add_argument("--profile", type=Path, default=None,
                        help="py-spy aia-bot and the bare app over the measured rounds (threads on CPU) "
                             "into DIR/ack.txt and DIR/bare.txt")
    args = parser.parse_args()

    workdir = Path(tempfile.mkdtemp(prefix="aia-bench-"))
    kube = FakeKubeAPIServer().start()
    seed_aia_system(kube)
    slack = FakeSlackServer(team_id=TEAM_ID).start()
    install_users(slack)
    env = {
        "SLACK_BOT_TOKEN": slack.bot_token,
        "SLACK_SIGNING_SECRET": "bench-signing-secret",
        "SLACK_API_URL": slack.api_url,
        "DATABASE_URL": args.database or f"sqlite:///{workdir}/bench.db",
        "KUBECONFIG": kube.write_kubeconfig(str(workdir / "kubeconfig")),
        "AIA_LOG_LEVEL": "WARNING",
    }
    bot = BotProcess(env, workdir / "bot.log", config_yaml="roles:\n  viewer: [U0VIEW1]\n").start(timeout=120)
    bare = BareBoltProcess(env, workdir / "bare.log")
    pool = ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn"))
    try:
        bare.start()
        # Warm-up, a whole burst each: the first burst pays for imports, connection pools and
        # the first use of every worker thread, once in a process's life.
        one_round(bot, slack, args.concurrency, pool)
        one_round(bare, slack, args.concurrency, pool)
        slack.wait_for(lambda: len(slack.calls_to("chat.postMessage")) >= args.concurrency, timeout=60)
        kube.delay_seconds = args.kube_delay
        latencies: list[float] = []
        bare_latencies: list[float] = []
        answer_times: list[float] = []
        spies = []
        if args.profile is not None:
            args.profile.mkdir(parents=True, exist_ok=True)
            for name, app in (("ack.txt", bot), ("bare.txt", bare)):
                assert app.process is not None
                spies.append(subprocess.Popen(  # noqa: S603 - py-spy from this virtualenv
                    [str(Path(sys.executable).parent / "py-spy"), "record", "--pid", str(app.process.pid),
                     "--rate", "500", "--format", "raw", "--nonblocking", "--threads",
                     "--output", str(args.profile / name)],
                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
            time.sleep(1.0)
        cpu_before = cpu_seconds(bot)
        loop_cpu = {"aia-bot": 0.0, "bare": 0.0}
        for _ in range(args.rounds):
            # The bare app's round first: aia-bot's slow answers (Kubernetes delayed) must
            # not be running beside it, or the baseline would be measured on a busier machine.
            loop_before = loop_cpu_seconds(bare)
            bare_round = one_round(bare, slack, args.concurrency, pool)
            loop_cpu["bare"] += loop_cpu_seconds(bare) - loop_before
            bare_latencies += bare_round
            posted_before = len(slack.calls_to("chat.postMessage"))
            started = time.perf_counter()
            loop_before = loop_cpu_seconds(bot)
            this_round = one_round(bot, slack, args.concurrency, pool)
            # The loop's CPU until the last ack: the queued work is still waiting for quiet.
            loop_cpu["aia-bot"] += loop_cpu_seconds(bot) - loop_before
            latencies += this_round
            print(f"  round: aia-bot p50 {statistics.median(this_round) * 1000:.1f} ms, max {max(this_round) * 1000:.1f} ms;"
                  f" bare Bolt p50 {statistics.median(bare_round) * 1000:.1f} ms, max {max(bare_round) * 1000:.1f} ms")
            slack.wait_for(
                lambda pb=posted_before: len(slack.calls_to("chat.postMessage")) >= pb + args.concurrency,
                timeout=120,
            )
            answer_times.append(time.perf_counter() - started)
        for spy in spies:
            spy.send_signal(signal.SIGINT)
            spy.wait(timeout=30)
        assert bot.process is not None
        status = Path(f"/proc/{bot.process.pid}/status").read_text()
        peak_rss = next(line.split()[1] for line in status.splitlines() if line.startswith("VmHWM"))
        bot_cpu = cpu_seconds(bot) - cpu_before
        ms = [v * 1000 for v in latencies]
        bare_ms = [v * 1000 for v in bare_latencies]
        print(f"requests: {len(ms)} ({args.rounds} rounds of {args.concurrency} concurrent), "
              f"Kubernetes delay {args.kube_delay}s, database {env['DATABASE_URL'].split(':')[0]}")
        print(f"ack latency ms, aia-bot:   {stats(ms)}")
        print(f"ack latency ms, bare Bolt: {stats(bare_ms)}")
        print(f"ratio aia-bot / bare Bolt: p50 {statistics.median(ms) / statistics.median(bare_ms):.2f}  "
              f"p99 {percentile(ms, 99) / percentile(bare_ms, 99):.2f}  (goal: p99 <= 1.25)")
        print(f"CPU of aia-bot serve per request (ack + answer): {1000 * bot_cpu / len(ms):.1f} ms")
        print(f"event loop CPU per ack: aia-bot {1000 * loop_cpu['aia-bot'] / len(ms):.2f} ms, "
              f"bare Bolt {1000 * loop_cpu['bare'] / len(bare_ms):.2f} ms")
        print(f"all {args.concurrency} answers in Slack after (s): "
              + ", ".join(f"{t:.1f}" for t in answer_times))
        print(f"peak RSS of aia-bot serve: {int(peak_rss) / 1024:.0f} MiB")
    finally:
        pool.shutdown()
        bot.stop()
        if bare.process is not None:
            bare.stop()
        kube.stop()
        slack.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
