"""Escalation timers at scale: N active escalations due over a spread, 3 replicas on PostgreSQL.

Inserts --escalations escalations straight into a fresh PostgreSQL database (their next step
due uniformly over --spread seconds, starting --lead seconds from now), starts --replicas
`aia-bot serve` processes on it with the local Slack server and a local paging webhook, and
kills one replica with SIGKILL at --kill-at seconds. Each step pages a webhook (the phone
line, PagerDuty Events v2) and posts its mention into the escalation's thread.

Reports, measured at the receivers: lateness of each page after its due time (p50/p99/max),
duplicate pages, pages missing, and the worst lateness of the steps the killed replica had
fired (pages it claimed and may not have sent) and of the steps due right after the kill; and
the CPU per page: every replica's CPU seconds from the first due time (or from "all replicas up",
if later) to the end (the killed one's up to its kill) divided by the pages delivered. Start-up
CPU (imports, migrations) is left out; an idle replica's CPU per second is printed apart when the
replicas were up 5 s or more before the first due time (raise --lead on a slow machine).

    .venv/bin/python bench/escalation_timers.py [--escalations 10000] [--spread 120] [--replicas 3]
        [--kill-at 60] [--database postgresql://postgres@127.0.0.1:5432/test]
    .venv/bin/python bench/escalation_timers.py --find-knee [--spread 60] [--rates 60,83,110,140,180]
    .venv/bin/python bench/escalation_timers.py --escalations 3000 --spread 40 --kill-at -1 --profile /tmp/prof

--find-knee runs the bench at each rate (pages/s over --spread, no kill) until p99 lateness
crosses 1 s, and prints the knee: the rate where it crossed (linear between the two runs
around it). --profile DIR records one surviving replica with py-spy (`pip install py-spy`; samples of the threads on a CPU)
into DIR/replica.txt (collapsed stacks) and prints the functions holding the most samples.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import psycopg  # noqa: E402
from slack_sdk import WebClient  # noqa: E402
from sqlalchemy import insert  # noqa: E402

from bot.escalation_policy import EscalationPolicy  # noqa: E402
from bot.store.db import make_engine, migrate  # noqa: E402
from bot.store.models import Escalation  # noqa: E402
from sandbox.slack_server import FakeSlackServer  # noqa: E402
from tests.harness.bot_process import BotProcess  # noqa: E402
from tests.harness.webhook_receiver import WebhookReceiver  # noqa: E402

CHANNEL = "C0BENCH"


def percentile(values: list[float], pct: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(pct / 100 * len(ordered)) - 1))
    return ordered[index]


def create_database(admin_url: str) -> str:
    name = f"aia_bench_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    return admin_url.rsplit("/", 1)[0] + "/" + name


def drop_database(admin_url: str, url: str) -> None:
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{url.rsplit("/", 1)[1]}" WITH (FORCE)')


def thread_parents(slack: FakeSlackServer, count: int) -> list[str]:
    """One parent message per escalation, as an alert thread would be: a replica that takes
    over a dead one's pages looks into the thread before posting again."""
    client = WebClient(token=slack.bot_token, base_url=slack.api_url)
    with ThreadPoolExecutor(8) as pool:
        return list(pool.map(lambda i: str(client.chat_postMessage(channel=CHANNEL, text=f"alert {i}")["ts"]),
                             range(count)))


def seed(url: str, policy: EscalationPolicy, count: int, first_due: datetime, spread: float,
         parents: list[str]) -> dict[str, float]:
    """Insert the escalations; returns id -> due time (epoch seconds)."""
    engine = make_engine(url)
    migrate(engine)
    snapshot = policy.model_dump_json()
    now = datetime.now(UTC)
    dues: dict[str, float] = {}
    rows = []
    for i in range(count):
        esc_id = "E" + uuid.uuid4().hex[:6].upper()
        while esc_id in dues:
            esc_id = "E" + uuid.uuid4().hex[:6].upper()
        due = first_due + timedelta(seconds=spread * random.random())
        dues[esc_id] = due.timestamp()
        rows.append(dict(
            id=esc_id, source="manual", title=f"bench {i}", severity="critical", alert_group_id=None,
            channel_id=CHANNEL, thread_ts=parents[i], card_ts=None, policy=snapshot, status="active",
            version=1, step_seq=0, current_level=0, cycle=0, next_level=1, next_reason="start", next_due_at=due,
            created_by="bench", created_at=now,
        ))
    with engine.begin() as conn:
        for start in range(0, len(rows), 1000):
            conn.execute(insert(Escalation), rows[start : start + 1000])
    engine.dispose()
    return dues


def claim_and_send_times(url: str) -> tuple[list[float], list[float]]:
    """Per step: claim time minus due time, and last send minus claim (from the database)."""
    with psycopg.connect(url) as conn:
        rows = conn.execute(
            "SELECT extract(epoch FROM min(created_at) - min(due_at)), extract(epoch FROM max(sent_at) - min(created_at))"
            " FROM escalation_deliveries WHERE key LIKE 's1:%' GROUP BY escalation_id"
        ).fetchall()
    return [float(r[0]) for r in rows if r[0] is not None], [float(r[1]) for r in rows if r[1] is not None]


def dump_steps(path: Path, url: str, dues: dict[str, float], arrived: dict[str, float], origin: float) -> None:
    """Per step, seconds from the first due time: due, claimed, marked sent, arrived at the webhook."""
    with psycopg.connect(url) as conn:
        rows = conn.execute(
            "SELECT escalation_id, extract(epoch FROM min(created_at)), extract(epoch FROM max(sent_at)),"
            " min(claimed_by), max(sent_by) FROM escalation_deliveries WHERE key LIKE 's1:%' GROUP BY escalation_id"
        ).fetchall()
    with path.open("w") as out:
        for esc_id, claimed, sent, claimed_by, sent_by in rows:
            def rel(t: object) -> float | None:
                return round(float(t) - origin, 4) if t is not None else None  # type: ignore[arg-type]
            out.write(json.dumps({"id": esc_id, "due": rel(dues.get(esc_id)), "claimed": rel(claimed),
                                  "sent": rel(sent), "arrived": rel(arrived.get(esc_id)),
                                  "claimed_by": claimed_by, "sent_by": sent_by}) + "\n")


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a live process, from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    return (int(fields[11]) + int(fields[12])) / ticks


def fired_by(url: str) -> dict[str, str]:
    with psycopg.connect(url) as conn:
        return {r[0]: r[1] or "" for r in conn.execute("SELECT id, fired_by FROM escalations")}


def profile_summary(collapsed: Path, top: int = 25) -> str:
    """Functions by share of samples, inclusive (on the stack) and self (at the top), from
    py-spy's collapsed stacks ("frame;frame;frame count" per line)."""
    inclusive: Counter[str] = Counter()
    own: Counter[str] = Counter()
    total = 0
    for line in collapsed.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        total += count
        frames = [f for f in stack.split(";") if f]
        # py-spy frames look like "fn (module/path.py:123)": keep function and file, drop the line.
        names = [f.rsplit(":", 1)[0] + ")" if f.endswith(")") and ":" in f else f for f in frames]
        for name in set(names):
            inclusive[name] += count
        if names:
            own[names[-1]] += count
    lines = [f"{total} samples; inclusive % / self % / function"]
    for name, count in inclusive.most_common(top):
        lines.append(f"{100 * count / total:5.1f} {100 * own[name] / total:5.1f}  {name}")
    lines.append("top self:")
    for name, count in own.most_common(top):
        lines.append(f"{100 * count / total:5.1f}  {name}")
    return "\n".join(lines)


def run(args: argparse.Namespace, escalations: int, kill_at: float) -> dict[str, object]:
    slack = FakeSlackServer(team_id="T0AIA").start()
    slack.add_channel(CHANNEL, "aia-bench", [])
    webhook = WebhookReceiver().start()
    policy = EscalationPolicy.model_validate(
        {"levels": [{"name": "phone", "webhook": webhook.url, "wait": "1h"}], "start_on": {"severity": []}}
    )
    url = create_database(args.database)
    workdir = Path(tempfile.mkdtemp(prefix="aia-bench-esc-"))
    config = workdir / "aia.yaml"
    config.write_text(json.dumps({"escalation": json.loads(policy.model_dump_json())}))
    parents = thread_parents(slack, escalations)
    first_due = datetime.now(UTC) + timedelta(seconds=args.lead)
    dues = seed(url, policy, escalations, first_due, args.spread, parents)
    print(f"seeded {len(dues)} escalations due {first_due:%H:%M:%S} + {args.spread:.0f}s "
          f"({len(dues) / args.spread:.0f}/s) in {url.rsplit('/', 1)[1]}", flush=True)
    env = {
        "SLACK_BOT_TOKEN": slack.bot_token, "SLACK_SIGNING_SECRET": "bench-secret", "SLACK_API_URL": slack.api_url,
        "DATABASE_URL": url, "AIA_BOT_CONFIG": str(config), "AIA_PAGING_ROUTING_KEY": "bench-routing-key",
        "AIA_ESCALATION_POLL_SECONDS": str(args.poll), "AIA_LOG_LEVEL": "WARNING", "AIA_WORKER_THREADS": "2",
    }
    if args.workers:
        env["AIA_ESCALATION_WORKERS"] = str(args.workers)
    replicas = [BotProcess(env, workdir / f"bot-{i}.log") for i in range(args.replicas)]
    try:
        for replica in replicas:
            replica.start(timeout=180)  # a shared machine under load starts slowly
    except RuntimeError:
        for replica in replicas:
            if replica.process is not None:
                replica.stop()
        raise
    pids = [r.process.pid for r in replicas if r.process is not None]
    up_at = time.time()
    cpu_at_up = {pid: cpu_seconds(pid) for pid in pids}
    print(f"{len(replicas)} replicas up {up_at - first_due.timestamp():+.1f}s from the first due time", flush=True)
    # CPU per page counts from the first due time (or from "all up", if they came up late):
    # an idle replica's own polling is measured apart, over the wait before it.
    idle_cpu_per_s = None
    if first_due.timestamp() - up_at > 5:
        time.sleep(first_due.timestamp() - up_at)
        idle_cpu_per_s = sum(cpu_seconds(pid) - cpu_at_up[pid] for pid in pids) / len(pids) / (time.time() - up_at)
    cpu_at_start = {pid: cpu_seconds(pid) for pid in pids}
    started_at = time.time()
    cpu_at_end: dict[int, float] = {}
    profiler = None
    if args.profile is not None:
        args.profile.mkdir(parents=True, exist_ok=True)
        profiler = subprocess.Popen(  # noqa: S603 - our own tool on our own child
            [str(Path(sys.executable).parent / "py-spy"), "record", "--nonblocking", "--threads", "--format", "raw",
             "--pid", str(pids[-1]), "--output", str(args.profile / "replica.txt"),
             "--duration", str(int(args.lead + args.spread + 5))],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )

    killed_pid, killed_at = None, None
    deadline = first_due.timestamp() + args.spread + 90
    while time.time() < deadline:
        now = time.time()
        if killed_pid is None and kill_at >= 0 and now >= first_due.timestamp() + kill_at:
            victim = replicas[0]
            assert victim.process is not None
            killed_pid, killed_at = victim.process.pid, now
            cpu_at_end[killed_pid] = cpu_seconds(killed_pid)
            victim.process.send_signal(signal.SIGKILL)
            victim.process.wait()
            print(f"killed replica pid {killed_pid} with SIGKILL at +{now - first_due.timestamp():.1f}s", flush=True)
        # Only a length check while pages arrive: the bench shares its process (and the GIL)
        # with the receiver and the Slack server, and must not slow them down.
        with webhook.lock:
            arrived = len(webhook.events)
        if arrived >= len(dues) and (killed_pid is not None or kill_at < 0):
            break
        time.sleep(0.5)
    time.sleep(3)  # late duplicates would arrive by now
    ended_at = time.time()
    for pid in pids:
        if pid != killed_pid:
            cpu_at_end[pid] = cpu_seconds(pid)
    if profiler is not None:
        profiler.send_signal(signal.SIGINT)
        profiler.wait(30)

    events = webhook.received()
    counts = Counter(str(e.details.get("escalation")) for e in events)
    first_seen: dict[str, float] = {}
    for event in events:
        esc_id = str(event.details.get("escalation"))
        first_seen.setdefault(esc_id, event.at)
    lateness = {esc_id: first_seen[esc_id] - due for esc_id, due in dues.items() if esc_id in first_seen}
    values = list(lateness.values()) or [float("inf")]
    duplicates = sum(c - 1 for c in counts.values() if c > 1)
    missing = sum(1 for esc_id in dues if esc_id not in first_seen)
    # The same trigger sent again (a sender killed mid-request): PagerDuty merges it by dedup key.
    resent_triggers = duplicates
    threads = Counter(m.thread_ts for m in slack.messages(CHANNEL) if m.thread_ts and "Paging level" in m.text)
    thread_duplicates = sum(c - 1 for c in threads.values() if c > 1)
    owners = fired_by(url)
    delivered = len(first_seen)
    run_cpu = sum(cpu_at_end[pid] - cpu_at_start[pid] for pid in pids)
    # Replica-seconds of the run (the killed one's up to its kill), to set the idle cost apart.
    run_seconds = sum((killed_at if pid == killed_pid and killed_at else ended_at) - started_at for pid in pids)
    result: dict[str, object] = {
        "escalations": len(dues), "rate_per_s": round(len(dues) / args.spread, 1), "replicas": args.replicas,
        "spread_s": args.spread, "poll_s": args.poll,
        "pages_received": len(events), "missing": missing,
        # Same dedup key as the first: PagerDuty merges it into the open incident (no second call).
        "webhook_triggers_resent": resent_triggers,
        "duplicate_thread_pages": thread_duplicates,
        "lateness_p50_ms": round(percentile(values, 50) * 1000, 1),
        "lateness_p99_ms": round(percentile(values, 99) * 1000, 1),
        "lateness_max_ms": round(max(values) * 1000, 1),
        "early_pages": sum(1 for v in values if v < -0.05),
        # The goal's measure: all replicas' CPU seconds (from "all up" to the end, the killed
        # one's up to its kill) per page delivered.
        "cpu_ms_per_page": round(1000 * run_cpu / max(1, delivered), 2),
        "cpu_s_all_replicas_during_run": round(run_cpu, 1),
        "idle_cpu_ms_per_s_per_replica": round(1000 * idle_cpu_per_s, 1) if idle_cpu_per_s is not None else None,
        # What the pages cost beyond an idle replica's own polling (the alert outbox and
        # folder, the escalation poll and heartbeats), which any deployment pays anyway.
        "cpu_ms_per_page_above_idle": (round(1000 * (run_cpu - idle_cpu_per_s * run_seconds) / max(1, delivered), 2)
                                       if idle_cpu_per_s is not None else None),
    }
    claims, sends = claim_and_send_times(url)
    if claims and sends:
        result.update({
            "claim_after_due_p50_ms": round(percentile(claims, 50) * 1000, 1),
            "claim_after_due_p99_ms": round(percentile(claims, 99) * 1000, 1),
            "send_after_claim_p50_ms": round(percentile(sends, 50) * 1000, 1),
            "send_after_claim_p99_ms": round(percentile(sends, 99) * 1000, 1),
        })
    if killed_pid is not None and killed_at is not None:
        victims = [e for e, owner in owners.items() if f":{killed_pid}:" in owner]
        victim_late = [lateness[e] for e in victims if e in lateness]
        around = [lateness[e] for e, due in dues.items() if killed_at - 5 <= due <= killed_at + 15 and e in lateness]
        others = [v for e, v in lateness.items() if e not in set(victims)]
        result.update({
            "killed_at_s": round(killed_at - first_due.timestamp(), 1),
            "steps_fired_by_killed_replica": len(victims),
            "worst_lateness_of_its_steps_s": round(max(victim_late), 2) if victim_late else None,
            "worst_lateness_due_near_the_kill_s": round(max(around), 2) if around else None,
            "p99_other_steps_ms": round(percentile(others, 99) * 1000, 1) if others else None,
        })
    # Where the CPU went: the surviving replicas (start-up included, as measured before), and
    # this process (the local Slack server and the webhook receiver, stand-ins for Slack and
    # PagerDuty).
    survivors = [pid for pid in pids if pid != killed_pid]
    result.update({
        "cpu_s_surviving_replicas": round(sum(cpu_seconds(pid) for pid in survivors), 1),
        "cpu_s_slack_and_webhook_servers": round(sum(os.times()[:2]), 1),
        "load_average_1m_at_end": os.getloadavg()[0],
    })
    if args.dump is not None:
        dump_steps(args.dump, url, dues, first_seen, first_due.timestamp())
    for replica in replicas[1:] if killed_pid else replicas:
        replica.stop()
    slack.stop()
    webhook.stop()
    drop_database(args.database, url)
    if args.profile is not None and (args.profile / "replica.txt").exists():
        print(profile_summary(args.profile / "replica.txt"))
    return result


def find_knee(args: argparse.Namespace) -> int:
    """Step the rate until p99 lateness crosses 1 s; the knee is interpolated between the runs."""
    rates = [float(r) for r in args.rates.split(",")]
    previous: tuple[float, float] | None = None
    for rate in rates:
        result = run(args, int(rate * args.spread), kill_at=-1)
        p99 = float(result["lateness_p99_ms"])  # type: ignore[arg-type]
        print(f"rate {rate:.0f}/s: p99 {p99:.0f} ms, cpu/page {result['cpu_ms_per_page']} ms, "
              f"missing {result['missing']}, thread duplicates {result['duplicate_thread_pages']}", flush=True)
        if p99 >= 1000:
            if previous is None:
                print(f"knee: below {rate:.0f}/s (p99 already {p99:.0f} ms at the lowest rate)")
            else:
                low_rate, low_p99 = previous
                knee = low_rate + (rate - low_rate) * (1000 - low_p99) / (p99 - low_p99)
                print(f"knee: p99 crosses 1 s at about {knee:.0f} pages/s (between {low_rate:.0f} and {rate:.0f}/s)")
            return 0
        previous = (rate, p99)
    print(f"knee: above {rates[-1]:.0f}/s (p99 under 1 s at every rate tried)")
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--escalations", type=int, default=10_000)
    parser.add_argument("--spread", type=float, default=None, help="seconds (default 120; 60 with --find-knee)")
    parser.add_argument("--lead", type=float, default=20.0, help="seconds before the first step is due")
    parser.add_argument("--replicas", type=int, default=3)
    parser.add_argument("--kill-at", type=float, default=60.0, help="seconds after the first due time; <0 = never")
    parser.add_argument("--poll", type=float, default=2.0, help="AIA_ESCALATION_POLL_SECONDS")
    parser.add_argument("--workers", type=int, default=None, help="AIA_ESCALATION_WORKERS (default: the setting's)")
    parser.add_argument("--database", default="postgresql://postgres@127.0.0.1:5432/test")
    parser.add_argument("--dump", type=Path, default=None,
                        help="write one JSON line per step (due, claimed, sent, arrived, replica) for analysis")
    parser.add_argument("--find-knee", action="store_true", help="step the rate until p99 crosses 1 s (no kill)")
    parser.add_argument("--rates", default="60,83,110,140,180,230", help="pages/s tried by --find-knee, in order")
    parser.add_argument("--profile", type=Path, default=None, help="py-spy one surviving replica into this folder")
    args = parser.parse_args()
    if args.spread is None:
        args.spread = 60.0 if args.find_knee else 120.0
    if args.find_knee:
        return find_knee(args)
    result = run(args, args.escalations, args.kill_at)
    print(json.dumps(result, indent=2))
    return 0 if result["missing"] == 0 and result["duplicate_thread_pages"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
