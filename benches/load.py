#!/usr/bin/env python3
"""Load harness: ses-connector against an nginx stand-in for SES, in one run.

Measures the stand-in directly, then the service (release build, rate limits off,
logging at warn) at 1, 16 and 64 concurrent callers, each for a fixed time, with
oha or wrk. Prints requests/s, p50 and p99 latency, errors, the service's idle and
peak RSS and its time to ready, the ratios the performance targets are stated in,
and the CPU budget the throughput target leaves the service on this machine.
Everything it starts, it stops. Run it through scripts/load.sh, which installs nginx,
wrk and oha and builds the release binary.
"""

import argparse
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TOKEN = "load-send-token-0123456789abcdef"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_http(url, timeout=10.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=1) as r:
                if r.status == 200:
                    return True
        except Exception:
            time.sleep(0.001)
    return False


def status_kib(pid, field):
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


def cpu_seconds(pid):
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def tree_cpu_seconds(pid):
    """CPU time of a process and its children (nginx: master and worker)."""
    total = cpu_seconds(pid)
    try:
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    except OSError:
        children = []
    return total + sum(tree_cpu_seconds(int(child)) for child in children)


def children_cpu_seconds():
    """CPU time of the load generator runs that have finished so far."""
    times = os.times()
    return times.children_user + times.children_system


def parse_duration_ms(text):
    value, unit = re.match(r"([\d.]+)(us|ms|s|m)", text).groups()
    return float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60000.0}[unit]


def wrk(url, connections, seconds, script, env):
    command = ["wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "--latency", "-s", script, url]
    out = subprocess.run(command, capture_output=True, text=True, env=env, check=True).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    p50 = parse_duration_ms(re.search(r"\s50%\s+(\S+)", out).group(1))
    p99 = parse_duration_ms(re.search(r"\s99%\s+(\S+)", out).group(1))
    total = int(re.search(r"(\d+) requests in", out).group(1))
    errors = 0
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    if non2xx:
        errors += int(non2xx.group(1))
    socket_errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    if socket_errors:
        errors += sum(int(x) for x in socket_errors.groups())
    return {"rps": rps, "p50_ms": p50, "p99_ms": p99, "requests": total, "errors": errors}


def oha(url, connections, seconds, body, headers, env):
    command = ["oha", "--no-tui", "--output-format", "json", "-z", f"{seconds}s", "-c", str(connections),
               "-m", "POST", "-d", body]
    for key, value in headers.items():
        command += ["-H", f"{key}: {value}"]
    out = json.loads(subprocess.run(command + [url], capture_output=True, text=True, env=env, check=True).stdout)
    statuses = out.get("statusCodeDistribution", {})
    ok = sum(n for code, n in statuses.items() if code.startswith("2"))
    # Requests still in flight when the time is up are cut off by oha, not failed.
    cut_off = {k: n for k, n in out.get("errorDistribution", {}).items() if "deadline" not in k}
    total = sum(statuses.values()) + sum(cut_off.values())
    percentiles = out["latencyPercentiles"]
    return {"rps": out["summary"]["requestsPerSec"], "p50_ms": percentiles["p50"] * 1000,
            "p99_ms": percentiles["p99"] * 1000, "requests": total, "errors": total - ok}


class Generator:
    """Drives one point of load with the chosen tool."""

    def __init__(self, name, work, env):
        self.name, self.work, self.env = name, work, env

    def run(self, url, connections, seconds, body, headers):
        if self.name == "oha":
            return oha(url, connections, seconds, body, headers, self.env)
        script = write_lua(self.work, f"{abs(hash((body, tuple(headers.items()))))}.lua", body, headers)
        return wrk(url, connections, seconds, script, self.env)


def write_lua(directory, name, body, headers):
    lines = ['wrk.method = "POST"', f"wrk.body = {json.dumps(body)}"]
    for key, value in headers.items():
        lines.append(f'wrk.headers["{key}"] = "{value}"')
    path = directory / name
    path.write_text("\n".join(lines) + "\n")
    return str(path)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=int, default=10, help="duration of each measurement")
    parser.add_argument("--binary", default=str(ROOT / "target/release/ses-connector"))
    parser.add_argument("--max-connections", type=int, default=None,
                        help="SES_CONNECTOR_MAX_CONNECTIONS for the service (default: the service's)")
    parser.add_argument("--burst", type=int, default=0,
                        help="also run this many concurrent callers and report peak RSS (e.g. 2000)")
    parser.add_argument("--logto", action="store_true",
                        help="also measure Logto's AWS SES connector (benches/logto, Node) against the same stand-in")
    parser.add_argument("--transport", choices=["ses", "outbox"], default="ses",
                        help="outbox: measure the service without the SES call (for profiling)")
    parser.add_argument("--redis", action="store_true",
                        help="also measure the service with both rate limits on, state in memory and in a local Redis")
    parser.add_argument("--allocators", default="",
                        help="comma-separated allocators to compare in the same run: glibc, jemalloc, mimalloc "
                             "(each a release build with that cargo feature and its tuning)")
    parser.add_argument("--pacing", action="store_true",
                        help="also measure the cost of pacing that never bites (a rate far above the load) against pacing off")
    parser.add_argument("--json", help="also write the results to this file")
    parser.add_argument("--generator", choices=["oha", "wrk"], default="oha" if shutil.which("oha") else "wrk",
                        help="load generator (default: oha when installed, as in the reference measurements)")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="ses-connector-load."))
    processes = []

    def stop_all(*_):
        for p in processes:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in processes:
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()
        shutil.rmtree(work, ignore_errors=True)

    signal.signal(signal.SIGTERM, lambda *_: (stop_all(), sys.exit(1)))
    try:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("SES_CONNECTOR_", "AWS_"))}

        # The SES stand-in.
        nginx_port = free_port()
        conf = (ROOT / "benches/nginx.conf.in").read_text().replace("@DIR@", str(work)).replace("@PORT@", str(nginx_port))
        (work / "nginx.conf").write_text(conf)
        nginx = subprocess.Popen(["nginx", "-c", str(work / "nginx.conf"), "-p", str(work)], stderr=subprocess.DEVNULL)
        processes.append(nginx)
        ses_url = f"http://127.0.0.1:{nginx_port}"
        # A SendEmail body of the size the service sends.
        ses_body = json.dumps({
            "Destination": {"ToAddresses": ["user@example.com"]},
            "Content": {"Simple": {"Subject": {"Data": "123456 is your Acme sign-in code", "Charset": "UTF-8"},
                                   "Body": {"Html": {"Data": "x" * 2400, "Charset": "UTF-8"},
                                            "Text": {"Data": "y" * 300, "Charset": "UTF-8"}}}},
            "FromEmailAddress": "Acme <noreply@example.com>",
            "EmailTags": [{"Name": "usage_type", "Value": "SignIn"}],
        })
        generator = Generator(args.generator, work, env)
        direct_headers = {"Content-Type": "application/json"}
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                urllib.request.urlopen(urllib.request.Request(ses_url + "/v2/email/outbound-emails", data=b"{}"), timeout=1)
                break
            except Exception:
                time.sleep(0.01)

        # The service.
        config = json.loads(subprocess.run([args.binary, "init"], capture_output=True, text=True, check=True).stdout)
        config["accessKeyId"] = "AKIAIOSFODNN7EXAMPLE"
        config["accessKeySecret"] = "load-test-secret"
        service_port = free_port()
        service_env = dict(env)
        service_env.update({
            "SES_CONNECTOR_CONFIG_JSON": json.dumps(config),
            "SES_CONNECTOR_SEND_TOKENS": TOKEN,
            "SES_CONNECTOR_LISTEN": f"127.0.0.1:{service_port}",
            "SES_CONNECTOR_RATE_LIMIT_RECIPIENT": "0",
            "SES_CONNECTOR_RATE_LIMIT_IP": "0",
            "SES_CONNECTOR_LOG_LEVEL": "warn",
            "AWS_ENDPOINT_URL_SESV2": ses_url,
            "AWS_EC2_METADATA_DISABLED": "true",
        })
        if args.max_connections:
            service_env["SES_CONNECTOR_MAX_CONNECTIONS"] = str(args.max_connections)
        started = time.monotonic()
        service = subprocess.Popen([args.binary, "serve", "--transport", args.transport], env=service_env, stderr=subprocess.DEVNULL)
        processes.append(service)
        if not wait_http(f"http://127.0.0.1:{service_port}/readyz"):
            raise SystemExit("the service did not become ready")
        ready_ms = (time.monotonic() - started) * 1000
        time.sleep(0.5)
        idle_rss_kib = status_kib(service.pid, "VmRSS")

        send_body = json.dumps({"to": "user@example.com", "type": "SignIn",
                                "payload": {"code": "123456", "locale": "en", "application": {"name": "Acme"}},
                                "ip": "203.0.113.7"})
        service_headers = {"Content-Type": "application/json", "Authorization": f"Bearer {TOKEN}"}
        service_url = f"http://127.0.0.1:{service_port}/v1/messages"
        # Warm the connection pool and caches.
        generator.run(service_url, 16, 2, send_body, service_headers)

        results = {"direct": {}, "service": {}}
        for connections in (1, 16, 64):
            nginx_before, generator_before = tree_cpu_seconds(nginx.pid), children_cpu_seconds()
            r = generator.run(ses_url + "/v2/email/outbound-emails", connections, args.seconds, ses_body, direct_headers)
            r["standin_cpu_us_per_request"] = (tree_cpu_seconds(nginx.pid) - nginx_before) / max(r["requests"], 1) * 1e6
            r["generator_cpu_us_per_request"] = (children_cpu_seconds() - generator_before) / max(r["requests"], 1) * 1e6
            results["direct"][connections] = r
            cpu_before = cpu_seconds(service.pid)
            r = generator.run(service_url, connections, args.seconds, send_body, service_headers)
            r["cpu_us_per_request"] = (cpu_seconds(service.pid) - cpu_before) / max(r["requests"], 1) * 1e6
            results["service"][connections] = r
        peak_rss_kib = status_kib(service.pid, "VmHWM")
        # A burst far above the send cap (256 in flight + 512 queued): every request
        # must get an answer (200 or 503), and memory must stay bounded.
        burst = None
        if args.burst:
            burst = generator.run(service_url, args.burst, args.seconds, send_body, service_headers)
            burst["peak_rss_mib"] = status_kib(service.pid, "VmHWM") / 1024

        def measure_variants(variants, binaries=None):
            """Each variant a fresh service process with extra settings, at 1 and 64 callers."""
            for name, extra in variants:
                variant_env = dict(service_env)
                variant_env.update(extra)
                binary = (binaries or {}).get(name, args.binary)
                started_at = time.monotonic()
                variant = subprocess.Popen([binary, "serve", "--transport", args.transport],
                                           env=variant_env, stderr=subprocess.DEVNULL)
                processes.append(variant)
                if not wait_http(f"http://127.0.0.1:{service_port}/readyz"):
                    raise SystemExit(f"the service ({name}) did not become ready")
                variant_ready_ms = (time.monotonic() - started_at) * 1000
                time.sleep(0.5)
                variant_idle = status_kib(variant.pid, "VmRSS")
                generator.run(service_url, 16, 2, send_body, service_headers)
                results[name] = {"idle_rss_mib": variant_idle / 1024, "ready_ms": variant_ready_ms}
                for connections in (1, 64):
                    cpu_before = cpu_seconds(variant.pid)
                    r = generator.run(service_url, connections, args.seconds, send_body, service_headers)
                    r["cpu_us_per_request"] = (cpu_seconds(variant.pid) - cpu_before) / max(r["requests"], 1) * 1e6
                    results[name][connections] = r
                results[name]["peak_rss_mib"] = status_kib(variant.pid, "VmHWM") / 1024
                variant.send_signal(signal.SIGTERM)
                variant.wait(timeout=30)

        allocators = [a for a in args.allocators.split(",") if a]
        if (args.redis or args.pacing or allocators) and service.poll() is None:
            service.send_signal(signal.SIGTERM)
            service.wait(timeout=30)
        # Shared state: the same service with both limits on (high counts, so no send
        # is refused; a 1 s window keeps the logs short), state in memory, then in a
        # local Redis.
        if args.redis:
            redis_port = free_port()
            redis = subprocess.Popen(["redis-server", "--port", str(redis_port), "--bind", "127.0.0.1",
                                      "--save", "", "--appendonly", "no"], stdout=subprocess.DEVNULL)
            processes.append(redis)
            limits = {"SES_CONNECTOR_RATE_LIMIT_RECIPIENT": "1000000/1", "SES_CONNECTOR_RATE_LIMIT_IP": "1000000/1"}
            measure_variants([("memory_state", limits),
                              ("redis_state", dict(limits, SES_CONNECTOR_REDIS_URL=f"redis://127.0.0.1:{redis_port}/",
                                                              SES_CONNECTOR_STATE_SECRET="load-harness-state-secret-0123456789"))])
            redis.send_signal(signal.SIGTERM)
            redis.wait(timeout=10)
        # Allocators, each with the tuning that suits a small service.
        if allocators:
            # jemalloc's tuning is built in (.cargo/config.toml).
            tuning = {
                "glibc": {},
                "jemalloc": {},
                "mimalloc": {"MIMALLOC_ARENA_EAGER_COMMIT": "0", "MIMALLOC_PURGE_DELAY": "100"},
            }
            features_of = {
                "glibc": ["--no-default-features"],
                "jemalloc": [],
                "mimalloc": ["--no-default-features", "--features", "mimalloc"],
            }
            binaries = {}
            # The default build (jemalloc) is the one already measured above; the
            # others are built once each.
            for allocator in sorted(allocators, key=lambda a: features_of[a] != []):
                copy = work / f"ses-connector-{allocator}"
                if features_of[allocator]:
                    subprocess.run(["cargo", "build", "--release", "--locked", *features_of[allocator]],
                                   check=True, cwd=ROOT)
                    shutil.copy(ROOT / "target/release/ses-connector", copy)
                else:
                    shutil.copy(args.binary, copy)
                binaries[f"alloc_{allocator}"] = str(copy)
            # Leave the default build in place (cargo keeps each feature set's build,
            # so this only relinks the file).
            subprocess.run(["cargo", "build", "--release", "--locked"], check=True, cwd=ROOT)
            measure_variants([(f"alloc_{a}", tuning.get(a, {})) for a in allocators], binaries)
        # Pacing that never bites (a rate far above the load) against pacing off.
        if args.pacing:
            measure_variants([("pacing_off", {"SES_CONNECTOR_MAX_SEND_RATE": "0"}),
                              ("pacing_on", {"SES_CONNECTOR_MAX_SEND_RATE": "10000000"})])

        # Logto's connector against the same stand-in, with the same config and body.
        if args.logto:
            if service.poll() is None:
                service.send_signal(signal.SIGTERM)
                service.wait(timeout=30)
            logto_port = free_port()
            logto_env = dict(env)
            logto_env.update({"LOGTO_CONFIG": json.dumps(config), "PORT": str(logto_port),
                              "AWS_ENDPOINT_URL_SESV2": ses_url, "AWS_EC2_METADATA_DISABLED": "true"})
            logto = subprocess.Popen(["node", str(ROOT / "benches/logto/server.mjs")], env=logto_env,
                                     stderr=subprocess.DEVNULL)
            processes.append(logto)
            logto_url = f"http://127.0.0.1:{logto_port}/"
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:
                try:
                    request = urllib.request.Request(logto_url, data=send_body.encode())
                    with urllib.request.urlopen(request, timeout=1) as r:
                        if r.status == 200:
                            break
                except Exception:
                    time.sleep(0.05)
            else:
                raise SystemExit("Logto's connector did not answer a send (is `npm ci` done in benches/logto?)")
            generator.run(logto_url, 16, 2, send_body, {"Content-Type": "application/json"})
            results["logto"] = {}
            for connections in (1, 16, 64):
                cpu_before = cpu_seconds(logto.pid)
                r = generator.run(logto_url, connections, args.seconds, send_body, {"Content-Type": "application/json"})
                r["cpu_us_per_request"] = (cpu_seconds(logto.pid) - cpu_before) / max(r["requests"], 1) * 1e6
                results["logto"][connections] = r

        cores = os.cpu_count()
        print(f"\nses-connector load harness — {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, {cores} cores, "
              f"load generator {args.generator}, {args.seconds} s per point\n")
        print("| target | callers | requests/s | p50 ms | p99 ms | errors | service CPU µs/request |")
        print("|---|---:|---:|---:|---:|---:|---:|")
        for connections in (1, 16, 64):
            service_label = "ses-connector → stand-in" if args.transport == "ses" else "ses-connector (outbox, no SES call)"
            rows = [("direct", "SES stand-in (nginx) directly"), ("service", service_label)]
            if args.logto:
                rows.append(("logto", "Logto's connector (Node) → stand-in"))
            for name, label in rows:
                r = results[name][connections]
                cpu = f"{r['cpu_us_per_request']:.0f}" if "cpu_us_per_request" in r else "—"
                print(f"| {label} | {connections} | {r['rps']:.0f} | {r['p50_ms']:.3f} | {r['p99_ms']:.3f} | {r['errors']} | {cpu} |")
        ratio = results["service"][64]["rps"] / results["direct"][64]["rps"]
        added_p50 = results["service"][1]["p50_ms"] - results["direct"][1]["p50_ms"]
        added_p99 = results["service"][1]["p99_ms"] - results["direct"][1]["p99_ms"]
        print()
        print(f"throughput at 64 callers: {ratio * 100:.1f} % of the stand-in's direct rate")
        print(f"service CPU per send at 64 callers: {results['service'][64]['cpu_us_per_request']:.0f} µs (target ≤ 80)")
        print(f"added latency at 1 caller: p50 {added_p50:.3f} ms (target ≤ 0.2 ms), p99 {added_p99:.3f} ms")
        print(f"resident memory: idle {idle_rss_kib / 1024:.1f} MiB (target ≤ 15), peak under load {peak_rss_kib / 1024:.1f} MiB (target ≤ 40)")
        print(f"ready to serve: {ready_ms:.0f} ms after start (target ≤ 100)")
        if args.logto:
            logto = results["logto"]
            print(f"against Logto's connector: {results['service'][64]['rps'] / logto[64]['rps']:.1f}× its requests/s at 64 callers (target ≥ 15×) "
                  f"({results['service'][64]['rps']:.0f} vs {logto[64]['rps']:.0f}); p50 at 1 caller "
                  f"{results['service'][1]['p50_ms']:.3f} ms vs {logto[1]['p50_ms']:.3f} ms")
        # What the throughput target leaves the service: at 35 % of the direct rate,
        # the machine's cores minus what the stand-in and the generator spend per request.
        direct = results["direct"][64]
        target_rps = 0.35 * direct["rps"]
        per_request = cores * 1e6 / target_rps
        others = direct["standin_cpu_us_per_request"] + direct["generator_cpu_us_per_request"]
        print(f"CPU budget at the throughput target: {target_rps:.0f} requests/s on {cores} cores is {per_request:.0f} µs "
              f"of CPU per request; the stand-in spends {direct['standin_cpu_us_per_request']:.0f} µs and the generator "
              f"{direct['generator_cpu_us_per_request']:.0f} µs, leaving {per_request - others:.0f} µs for the service, "
              f"which spends {results['service'][64]['cpu_us_per_request']:.0f} µs")
        if args.redis:
            print("\n| state (both limits on) | callers | requests/s | p50 ms | p99 ms | errors | service CPU µs/request |")
            print("|---|---:|---:|---:|---:|---:|---:|")
            for name, label in (("memory_state", "in memory"), ("redis_state", "in Redis")):
                for connections in (1, 64):
                    r = results[name][connections]
                    print(f"| {label} | {connections} | {r['rps']:.0f} | {r['p50_ms']:.3f} | {r['p99_ms']:.3f} | {r['errors']} | {r['cpu_us_per_request']:.0f} |")
            memory, shared = results["memory_state"], results["redis_state"]
            print(f"Redis state: {shared[64]['rps'] / memory[64]['rps'] * 100:.1f} % of the in-memory requests/s at 64 callers "
                  f"(target ≥ 80 %); added p50 at 1 caller {shared[1]['p50_ms'] - memory[1]['p50_ms']:.3f} ms (target ≤ 0.3 ms)")
        if allocators:
            print("\n| allocator | callers | requests/s | p50 ms | p99 ms | errors | service CPU µs/request | idle RSS MiB | peak RSS MiB |")
            print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
            for allocator in allocators:
                result = results[f"alloc_{allocator}"]
                for connections in (1, 64):
                    r = result[connections]
                    print(f"| {allocator} | {connections} | {r['rps']:.0f} | {r['p50_ms']:.3f} | {r['p99_ms']:.3f} | {r['errors']} | "
                          f"{r['cpu_us_per_request']:.0f} | {result['idle_rss_mib']:.1f} | {result['peak_rss_mib']:.1f} |")
        if args.pacing:
            print("\n| pacing | callers | requests/s | p50 ms | p99 ms | errors | service CPU µs/request |")
            print("|---|---:|---:|---:|---:|---:|---:|")
            for name, label in (("pacing_off", "off"), ("pacing_on", "on, far above the load")):
                for connections in (1, 64):
                    r = results[name][connections]
                    print(f"| {label} | {connections} | {r['rps']:.0f} | {r['p50_ms']:.3f} | {r['p99_ms']:.3f} | {r['errors']} | {r['cpu_us_per_request']:.0f} |")
            off, on = results["pacing_off"], results["pacing_on"]
            print(f"pacing that does not bite: {(1 - on[64]['rps'] / off[64]['rps']) * 100:.1f} % fewer requests/s at 64 callers "
                  f"(target ≤ 5 %)")
        if burst:
            print(f"burst of {args.burst} callers: {burst['rps']:.0f} requests/s, p99 {burst['p99_ms']:.1f} ms, "
                  f"{burst['errors']} not 2xx (503 when over the cap), peak RSS {burst['peak_rss_mib']:.1f} MiB")
        if args.json:
            Path(args.json).write_text(json.dumps({
                "results": results, "ratio_64": ratio, "added_p50_ms": added_p50, "added_p99_ms": added_p99,
                "idle_rss_mib": idle_rss_kib / 1024, "peak_rss_mib": peak_rss_kib / 1024, "ready_ms": ready_ms,
                "service_cpu_budget_us": per_request - others,
            }, indent=2))
        errors = sum(r["errors"] for name, variant in results.items() if name not in ("direct", "logto")
                     for r in variant.values() if isinstance(r, dict))
        return 1 if errors else 0
    finally:
        stop_all()


if __name__ == "__main__":
    sys.exit(main())
