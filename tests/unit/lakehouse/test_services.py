"""How `lakehouse up` starts the stack, with two small HTTP servers as the services."""

from __future__ import annotations

import dataclasses
import socket
import sys
import time
from pathlib import Path
from urllib.parse import urlparse

import psutil

from lakehouse import services
from lakehouse.settings import PROJECT_ROOT, settings_from_mapping


def _python_service(name: str, port: int, code: str, folder: Path) -> services.Service:
    """A service whose process runs `code` and is healthy once it answers HTTP on `port`."""
    url = f"http://127.0.0.1:{port}/"
    return services.Service(name, lambda s: url, lambda s: True, lambda s: ([sys.executable, "-c", code], {}, folder), lambda s: services._http_ok(url))


def _http_server(name: str, port: int, delay_s: float, folder: Path) -> services.Service:
    """A service that starts answering on `port` `delay_s` seconds after its process starts."""
    code = f"import http.server, time; time.sleep({delay_s}); http.server.ThreadingHTTPServer(('127.0.0.1', {port}), http.server.SimpleHTTPRequestHandler).serve_forever()"
    return _python_service(name, port, code, folder)


def test_up_starts_every_service_before_it_waits_for_the_first(tmp_path, monkeypatch):
    base = services.free_port_block(2)
    slow = _http_server("slow", base, 3.0, tmp_path)
    quick = _http_server("quick", base + 1, 0.0, tmp_path)
    monkeypatch.setattr(services, "SERVICES", (slow, quick))
    settings = settings_from_mapping(services.second_stack_environment(tmp_path / "home", PROJECT_ROOT / ".lakehouse" / "sources"))
    answered: dict[str, float] = {}
    try:
        listed = services.up(settings, on_service=lambda name, message: answered.setdefault(name, time.time()))
        assert [(s.name, s.healthy) for s in listed] == [("slow", True), ("quick", True)]
        # the second service's process started while the first was still starting up, not after it answered
        quick_started = psutil.Process(services.running_pid(settings, "quick")).create_time()
        assert quick_started < answered["slow"] - 2.0
        assert list(answered) == ["slow", "quick"]  # and each is reported in the stack's order
    finally:
        services.down(settings)
    assert services.running_pid(settings, "slow") is None and services.running_pid(settings, "quick") is None


def test_a_second_stack_takes_one_block_of_free_ports_the_kernel_never_hands_out_itself(tmp_path):
    """Ports from the ephemeral range could be taken by an outgoing connection or a Spark driver
    between the pick and the service's bind; the stack's ports are distinct, free and below it."""
    env = services.second_stack_environment(tmp_path / "home", tmp_path / "sources")
    settings = settings_from_mapping(env)
    weed = range(settings.weed_port_base, settings.weed_port_base + 16)
    others = [urlparse(settings.s3_endpoint).port, urlparse(settings.mlflow_uri).port, urlparse(settings.airflow_url).port, settings.jupyter_port]
    ports = [*weed, *others]
    assert len(set(ports)) == len(ports) == 20
    assert max(ports) - min(ports) == 19  # one block
    ephemeral_low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    assert min(ports) >= 20000 and max(ports) < ephemeral_low
    for port in ports:  # free now: each binds
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", port))


def test_up_restarts_a_running_service_whose_keys_changed_and_leaves_the_others(tmp_path, monkeypatch):
    base = services.free_port_block(2)
    keys = {"held": "first"}
    changing = dataclasses.replace(_http_server("changing", base, 0.0, tmp_path), config=lambda s: dict(keys))
    steady = _http_server("steady", base + 1, 0.0, tmp_path)
    monkeypatch.setattr(services, "SERVICES", (changing, steady))
    settings = settings_from_mapping(services.second_stack_environment(tmp_path / "home", PROJECT_ROOT / ".lakehouse" / "sources"))
    try:
        services.up(settings)
        pids = {name: services.running_pid(settings, name) for name in ("changing", "steady")}
        said: list[tuple[str, str]] = []
        services.up(settings, on_service=lambda name, message: said.append((name, message)))
        assert {name: services.running_pid(settings, name) for name in pids} == pids  # nothing changed: both kept
        keys["held"] = "second"  # a key added or replaced, as an older secrets file gains a role
        services.up(settings, on_service=lambda name, message: said.append((name, message)))
        assert services.running_pid(settings, "changing") not in (None, pids["changing"])
        assert services.running_pid(settings, "steady") == pids["steady"]
        assert ("changing", "started with other keys or settings: restarting") in said
    finally:
        services.down(settings)


def _slow_to_stop(name: str, port: int, folder: Path) -> services.Service:
    """A service that, on SIGTERM, notes the moment, takes a second and a half to shut down, and notes its exit."""
    code = (
        "import http.server, signal, sys, time, threading\n"
        f"note = lambda what: open({str(folder / name)!r}, 'a').write(f'{{what}} {{time.time()}}\\n')\n"
        "def term(*_):\n"
        "    note('term'); time.sleep(1.5); note('exit'); sys.exit(0)\n"
        "signal.signal(signal.SIGTERM, term)\n"
        f"threading.Thread(target=http.server.ThreadingHTTPServer(('127.0.0.1', {port}), http.server.SimpleHTTPRequestHandler).serve_forever, daemon=True).start()\n"
        "while True: time.sleep(0.1)\n"
    )
    return _python_service(name, port, code, folder)


def test_down_stops_the_services_together_not_one_after_the_other(tmp_path, monkeypatch):
    base = services.free_port_block(2)
    slow = [_slow_to_stop(name, base + n, tmp_path) for n, name in enumerate(("first", "second"))]
    monkeypatch.setattr(services, "SERVICES", tuple(slow))
    settings = settings_from_mapping(services.second_stack_environment(tmp_path / "home", PROJECT_ROOT / ".lakehouse" / "sources"))
    try:
        services.up(settings)
    finally:
        said: list[tuple[str, str]] = []
        services.down(settings, on_service=lambda name, message: said.append((name, message)))
    assert said == [("first", "stopped"), ("second", "stopped"), ("jupyter", "not running")]
    notes = {s.name: dict(line.split() for line in (tmp_path / s.name).read_text().splitlines()) for s in slow}
    # each was asked to stop before either had finished stopping
    assert max(float(n["term"]) for n in notes.values()) < min(float(n["exit"]) for n in notes.values())
    assert all(services.running_pid(settings, s.name) is None for s in slow)
