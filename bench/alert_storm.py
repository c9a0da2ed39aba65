"""An alert storm: 5,000 alerts in 100 groups sent to `POST /alertmanager` as fast as possible.

Starts `aia-bot serve` as a process against the local Slack server, which enforces one
chat.postMessage per second per channel (burst 1) the way Slack does, and the local
Kubernetes API. The sender (its own process, raw HTTP/1.1 over keep-alive connections)
sends each group the way Alertmanager does: growing payloads as alerts join the group
(--steps of them), every payload twice (an HA pair of Alertmanagers). Reports:

- webhook latency p50/p99/max (goal p99 < 100 ms),
- alerts persisted (goal: all),
- 429s Slack answered (goal: a handful at most: the outbox paces itself),
- time until every group's parent message is in Slack, against the rate-limit bound
  (one post per second: groups + the storm summary - 1 seconds; goal within 10 %),
- peak RSS of the serve process,
- CPU of the serve process per webhook (while sending, and until every group is in Slack),
- the same webhooks, same sender, sent first to a bare app on the same stack
  (bench/bare_bolt_app.py: reads the body, answers 200), and the ratio of the two p99s:
  the goal is absolute, the ratio says how much of a result is the machine's speed.

    .venv/bin/python bench/alert_storm.py [--groups 100] [--alerts 5000] [--steps 5] [--connections 16]
                                          [--postgres | --database URL]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
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
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sqlalchemy import create_engine, text  # noqa: E402

from bot.store.db import normalise_url  # noqa: E402
from sandbox.aia_seed import seed_aia_system  # noqa: E402
from sandbox.kube_server import FakeKubeAPIServer  # noqa: E402
from sandbox.slack_server import FakeSlackServer  # noqa: E402
from tests.bot.alerts.payloads import alert, payload  # noqa: E402
from tests.harness.bot_process import BotProcess  # noqa: E402
from tests.harness.users import CHANNEL_ID, TEAM_ID, install_users  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from ack_latency import BareBoltProcess  # noqa: E402

TOKEN = "bench-alertmanager-token"


def percentile(values: list[float], pct: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(pct / 100 * len(ordered)) - 1))]


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a live process, from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def build_bodies(groups: int, alerts: int, steps: int) -> list[bytes]:
    """Every group's payloads in the order Alertmanager would send them, interleaved."""
    per_group = alerts // groups
    rounds: list[list[bytes]] = [[] for _ in range(steps)]
    for g in range(groups):
        name = f"StormAlert{g:03d}"
        severity = "critical" if g % 5 == 0 else "warning"
        members = [alert(name, severity=severity, pod=f"aia-api-blue-{g:03d}-{i:03d}") for i in range(per_group)]
        for step in range(steps):
            size = per_group * (step + 1) // steps
            body = json.dumps(payload(members[:size], group=name)).encode()
            rounds[step] += [body, body]  # the HA peer sends the same
    return [b for r in rounds for b in r]


async def _send_all(url: str, bodies: list[bytes], connections: int) -> list[float]:
    # Pre-built requests on plain asyncio streams: a client library would cost more per
    # request than the endpoint under test (see bench/ack_latency.py).
    host_port = url.split("://", 1)[1]
    host, port = host_port.split(":")
    queue: asyncio.Queue[bytes] = asyncio.Queue()
    for body in bodies:
        queue.put_nowait(body)
    latencies: list[float] = []

    async def worker() -> None:
        reader, writer = await asyncio.open_connection(host, int(port))
        while not queue.empty():
            body = queue.get_nowait()
            head = (f"POST /alertmanager HTTP/1.1\r\nHost: {host_port}\r\nContent-Type: application/json\r\n"
                    f"Authorization: Bearer {TOKEN}\r\nContent-Length: {len(body)}\r\n\r\n").encode()
            started = time.perf_counter()
            writer.write(head + body)
            response = await reader.readuntil(b"\r\n\r\n")
            status = int(response.split(b" ", 2)[1])
            length = next(int(line.split(b":", 1)[1]) for line in response.split(b"\r\n")
                          if line.lower().startswith(b"content-length:"))
            await reader.readexactly(length)
            latencies.append(time.perf_counter() - started)
            assert status == 200, status
        writer.close()

    await asyncio.gather(*(worker() for _ in range(connections)))
    return latencies


def send_all(url: str, bodies: list[bytes], connections: int) -> list[float]:
    return asyncio.run(_send_all(url, bodies, connections))


def _parents(slack: FakeSlackServer) -> int:
    return sum(1 for m in slack.messages(CHANNEL_ID)
               if not m.is_reply and m.text.startswith(("FIRING", "RESOLVED")))


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--groups", type=int, default=100)
    parser.add_argument("--alerts", type=int, default=5000)
    parser.add_argument("--steps", type=int, default=5, help="payloads per group as its alerts join")
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--database", default=None, help="DATABASE_URL (default: a SQLite file)")
    parser.add_argument("--postgres", action="store_true", help="a fresh database on the test PostgreSQL")
    parser.add_argument("--profile", type=Path, default=None,
                        help="py-spy the bot while the webhooks arrive (threads on CPU) into DIR/storm.txt")
    args = parser.parse_args()

    with contextlib.ExitStack() as stack:
        workdir = Path(tempfile.mkdtemp(prefix="aia-storm-"))
        database = args.database or f"sqlite:///{workdir}/storm.db"
        if args.postgres:
            from tests.conftest import fresh_pg_database

            database = stack.enter_context(fresh_pg_database())
        kube = FakeKubeAPIServer().start()
        stack.callback(kube.stop)
        seed_aia_system(kube)
        slack = FakeSlackServer(team_id=TEAM_ID, post_rate_per_channel=1.0, burst=1).start()
        stack.callback(slack.stop)
        install_users(slack)
        env = {
            "SLACK_BOT_TOKEN": slack.bot_token, "SLACK_SIGNING_SECRET": "bench-signing-secret",
            "SLACK_API_URL": slack.api_url, "DATABASE_URL": database,
            "KUBECONFIG": kube.write_kubeconfig(str(workdir / "kubeconfig")), "AIA_LOG_LEVEL": "WARNING",
            "AIA_ALERT_CHANNEL": CHANNEL_ID, "ALERTMANAGER_WEBHOOK_TOKEN": TOKEN,
        }
        bot = BotProcess(env, workdir / "bot.log", config_yaml="roles:\n  viewer: [U0VIEW1]\n").start(timeout=120)
        stack.callback(bot.stop)
        bodies = build_bodies(args.groups, args.alerts, args.steps)
        pool = ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn"))
        stack.callback(pool.shutdown)
        pool.submit(send_all, bot.url, [json.dumps(payload([alert("Warmup")], group="Warmup")).encode()], 1).result()
        slack.wait_for(lambda: _parents(slack) >= 1, timeout=30)
        # The baseline: the same bodies, the same sender, a bare app on the same stack; then it
        # stops, so the bot's storm has the machine to itself.
        bare = BareBoltProcess(env, workdir / "bare.log").start()
        try:
            pool.submit(send_all, bare.url, bodies[:50], args.connections).result()  # warm-up
            bare_ms = [v * 1000 for v in pool.submit(send_all, bare.url, bodies, args.connections).result()]
        finally:
            bare.stop()
        time.sleep(2)  # the warm-up group's thread reply, so the storm starts on a quiet channel
        slack.reset()

        assert bot.process is not None
        spy = None
        if args.profile is not None:
            args.profile.mkdir(parents=True, exist_ok=True)
            spy = subprocess.Popen([str(Path(sys.executable).parent / "py-spy"), "record", "--pid",
                                    str(bot.process.pid), "--rate", "250", "--format", "raw", "--nonblocking",
                                    "--threads", "--output", str(args.profile / "storm.txt")],
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            time.sleep(1.0)
        cpu_start = cpu_seconds(bot.process.pid)
        started = time.perf_counter()
        latencies = pool.submit(send_all, bot.url, bodies, args.connections).result()
        sent_in = time.perf_counter() - started
        if spy is not None:
            spy.send_signal(signal.SIGINT)
            spy.wait(timeout=30)
        cpu_sending = cpu_seconds(bot.process.pid) - cpu_start
        slack.wait_for(lambda: _parents(slack) >= args.groups, timeout=args.groups * 3 + 60)
        visible_in = time.perf_counter() - started
        cpu_until_visible = cpu_seconds(bot.process.pid) - cpu_start
        posts = [c for c in slack.calls_to("chat.postMessage") if c.http_status == 200]
        parent_times = [c.time for c in posts if str(c.args.get("text", "")).startswith("FIRING")]
        span = max(parent_times) - min(c.time for c in posts)

        engine = create_engine(normalise_url(database))
        with engine.connect() as conn:
            persisted = conn.execute(text("SELECT count(*) FROM alerts a JOIN alert_groups g ON g.id = a.group_id "
                                          "WHERE g.alertnames LIKE 'StormAlert%'")).scalar_one()
        engine.dispose()
        storm_posts = sum(1 for m in slack.messages(CHANNEL_ID) if "alert storm" in m.text.lower())
        throttled = [c for c in slack.calls if c.http_status == 429]
        bound = args.groups + storm_posts - 1
        assert bot.process is not None
        status = Path(f"/proc/{bot.process.pid}/status").read_text()
        peak_rss = int(next(line.split()[1] for line in status.splitlines() if line.startswith("VmHWM")))
        ms = [v * 1000 for v in latencies]
        order = [m.text.split("]")[0] for m in slack.messages(CHANNEL_ID)
                 if not m.is_reply and m.text.startswith("FIRING")]
        # Priority can only order what is waiting: the first posts go out while the storm is
        # still arriving. Ideal: the 20 % critical groups are the first 20 % (+ a few) posts.
        last_critical = max((i + 1 for i, t in enumerate(order) if t == "FIRING [critical"), default=0)
        report: dict[str, Any] = {
            "database": database.split(":")[0],
            "requests": len(ms),
            "sent in s": round(sent_in, 2),
            "webhook ms p50/p99/max": f"{statistics.median(ms):.1f} / {percentile(ms, 99):.1f} / {max(ms):.1f}",
            "bare app ms p50/p99/max": f"{statistics.median(bare_ms):.1f} / {percentile(bare_ms, 99):.1f} / "
                                       f"{max(bare_ms):.1f}",
            "ratio p99 bot / bare app": round(percentile(ms, 99) / percentile(bare_ms, 99), 2),
            "alerts persisted": f"{persisted} of {args.alerts // args.groups * args.groups}",
            "429s": len(throttled),
            "storm summary messages": storm_posts,
            "all groups visible after s": round(visible_in, 1),
            "first post to last group s": round(span, 1),
            "rate-limit bound s": bound,
            "last critical group at post": f"{last_critical} of {len(order)} ({sum(t == 'FIRING [critical' for t in order)} critical)",
            "peak RSS MiB": round(peak_rss / 1024),
            # The serve process's CPU while the webhooks arrive (answering + the inbox folder
            # running beside), and until every group is in Slack (folding, the paced posts).
            "CPU ms per webhook, sending": round(1000 * cpu_sending / len(ms), 2),
            "CPU ms per webhook, to end": round(1000 * cpu_until_visible / len(ms), 2),
        }
        for key, value in report.items():
            print(f"{key:28} {value}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
