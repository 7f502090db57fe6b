"""docker-compose.yml and the Dockerfile, checked without a Docker engine: every command is a real
`tutorhub` subcommand, every TUTORHUB_* variable a real setting, health checks and ordering wired."""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from chat_server.app import create_app
from chat_server.cli import build_parser
from chat_server.settings import Settings
from tests.support.services import free_port, serve_app
from tests.support.ws import new_user, recv, socket, until

ROOT = Path(__file__).resolve().parent.parent
COMPOSE: dict[str, Any] = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
SERVICES: dict[str, Any] = COMPOSE["services"]
_SUBST = re.compile(r"\$\{(\w+)(?::?[-?])?([^}]*)\}")


def _environment(service: dict[str, Any]) -> dict[str, str | None]:
    env = service.get("environment", {})
    if isinstance(env, list):  # ["NAME=value", "NAME"] form
        return {k: (v if sep else None) for k, sep, v in (e.partition("=") for e in env)}
    return {k: None if v is None else str(v) for k, v in env.items()}


def _substitute(value: str) -> str:
    """What compose would put there with nothing set in the shell (`:?` needs a value: use one)."""
    def one(m: re.Match[str]) -> str:
        if "?" in m.group(0):
            return "value-from-the-shell"
        return m.group(2)
    return _SUBST.sub(one, value)


TUTORHUB_SERVICES = ("migrate", "server", "worker", "telegram")


def test_services_and_images() -> None:
    assert set(SERVICES) == {"db", "redis", "migrate", "server", "proxy", "worker", "telegram"}
    assert SERVICES["db"]["image"] == "pgvector/pgvector:pg16"
    assert SERVICES["redis"]["image"].split(":")[0] == "redis"
    assert SERVICES["redis"]["image"].split(":")[1].startswith("7")
    assert SERVICES["proxy"]["image"].split(":")[0] == "caddy"
    for name in TUTORHUB_SERVICES:
        assert SERVICES[name]["build"] == "."
        assert SERVICES[name]["image"] == SERVICES["server"]["image"]


@pytest.mark.parametrize("name", TUTORHUB_SERVICES)
def test_commands_are_real_tutorhub_subcommands(name: str) -> None:
    command = SERVICES[name]["command"]
    assert isinstance(command, list) and command[0] == "tutorhub"
    args = build_parser().parse_args(command[1:])  # argparse exits on an unknown subcommand/flag
    assert args.command == {"server": "serve"}.get(name, name)
    assert callable(args.func)


def test_replicas_are_reached_through_the_proxy_only() -> None:
    server, proxy = SERVICES["server"], SERVICES["proxy"]
    args = build_parser().parse_args(server["command"][1:])
    assert (args.host, args.port) == ("0.0.0.0", 8000)
    assert "ports" not in server  # replicas cannot share a published port
    assert int(_substitute(str(server["deploy"]["replicas"]))) >= 2
    probe = " ".join(server["healthcheck"]["test"])
    assert f"127.0.0.1:{args.port}/readyz" in probe
    env = _environment(proxy)
    assert env["CADDY_UPSTREAMS"] == f"server:{args.port}"
    assert [f"{env['CADDY_PORT']}:{env['CADDY_PORT']}"] == proxy["ports"]
    mount, target, mode = proxy["volumes"][0].split(":")
    assert (ROOT / mount).is_file() and mode == "ro"
    assert proxy["command"][proxy["command"].index("--config") + 1] == target
    assert _environment(server)["FORWARDED_ALLOW_IPS"] == "*"


def test_telegram_bridge_is_an_opt_in_profile() -> None:
    bridge = SERVICES["telegram"]
    assert bridge["profiles"] == ["telegram"]
    assert all("profiles" not in s for n, s in SERVICES.items() if n != "telegram")
    env = _environment(bridge)
    assert env["TUTORHUB_TELEGRAM_BOT_TOKEN"] is None  # passed through from the shell, if set
    assert env["TUTORHUB_TELEGRAM_SERVER_URL"] == "http://proxy:8000"
    assert "proxy" in bridge["depends_on"]


def test_every_tutorhub_variable_is_a_real_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    seen = set()
    for name, service in SERVICES.items():
        env = _environment(service)
        tutorhub_vars = {k: v for k, v in env.items() if k.startswith("TUTORHUB_")}
        for var in tutorhub_vars:
            field = var.removeprefix("TUTORHUB_").lower()
            assert field in Settings.model_fields, f"{name}: {var} is not a setting"
            seen.add(var)
        if name in TUTORHUB_SERVICES:
            # And the values compose would pass parse as those settings.
            for var in [v for v in os.environ if v.startswith("TUTORHUB_")]:
                monkeypatch.delenv(var)
            for var, value in tutorhub_vars.items():
                if value is not None:
                    monkeypatch.setenv(var, _substitute(value))
            s = Settings(_env_file=None)  # type: ignore[call-arg]
            assert s.database_url and s.database_url.startswith("postgresql://")
            assert s.redis_url == "redis://redis:6379/0"
            assert s.secret_key == "value-from-the-shell"
            assert s.embedded is False
            # Only the one-shot `tutorhub migrate` migrates: replicas starting at once would race.
            assert s.should_migrate is False
    assert {"TUTORHUB_DATABASE_URL", "TUTORHUB_REDIS_URL", "TUTORHUB_SECRET_KEY",
            "TUTORHUB_AUTO_MIGRATE"} <= seen


def test_database_url_matches_the_db_service() -> None:
    db_env = _environment(SERVICES["db"])
    url = _substitute(_environment(SERVICES["server"])["TUTORHUB_DATABASE_URL"] or "")
    user, password, database = (_substitute(db_env[k] or "") for k in
                                ("POSTGRES_USER", "POSTGRES_PASSWORD", "POSTGRES_DB"))
    assert url == f"postgresql://{user}:{password}@db:5432/{database}"


def test_healthchecks_and_startup_order() -> None:
    for name in ("db", "redis", "server"):
        check = SERVICES[name]["healthcheck"]
        assert check["test"][0] in ("CMD", "CMD-SHELL") and len(check["test"]) > 1, name
    assert "pg_isready" in " ".join(SERVICES["db"]["healthcheck"]["test"])
    assert "ping" in SERVICES["redis"]["healthcheck"]["test"]
    healthy = {"condition": "service_healthy"}
    assert SERVICES["migrate"]["depends_on"] == {"db": healthy}
    assert SERVICES["migrate"]["restart"] == "no"
    assert SERVICES["server"]["depends_on"] == {
        "db": healthy, "redis": healthy, "migrate": {"condition": "service_completed_successfully"}}
    assert SERVICES["proxy"]["depends_on"] == {"server": healthy}
    assert SERVICES["worker"]["depends_on"] == {"db": healthy, "redis": healthy, "server": healthy}


def test_volumes() -> None:
    declared = set(COMPOSE["volumes"])
    assert "pgdata:/var/lib/postgresql/data" in SERVICES["db"]["volumes"]
    # Uploads written by the server are read by the worker: the same data volume in both.
    assert SERVICES["server"]["volumes"] == SERVICES["worker"]["volumes"]
    data_volume = SERVICES["server"]["volumes"][0].split(":")
    assert data_volume[1] == _environment(SERVICES["server"])["TUTORHUB_DATA_DIR"]
    for service in SERVICES.values():
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            assert source.startswith("./") or source in declared, volume


def _text(frames: list[dict[str, Any]]) -> str:
    return "".join(f["text"] for f in frames if f["type"] == "reply.delta")


async def test_the_caddyfile_proxies_two_instances_and_sockets_resume_on_either(
        settings: Settings, redis_url: str, tmp_path: Path) -> None:
    """deploy/Caddyfile run by Debian's caddy in front of two servers sharing Redis: sockets
    spread over both, a reply reaches the user's sockets on both, a socket resumes through the
    proxy with no gap wherever it lands."""
    caddy = shutil.which("caddy")
    assert caddy, "apt-get install caddy (scripts/setup.sh --test does)"
    s = settings.model_copy(update={"redis_url": redis_url})
    app_a, app_b = create_app(s), create_app(s)
    async with serve_app(app_a) as base_a, serve_app(app_b) as base_b:
        port = free_port()
        upstreams = " ".join(base.removeprefix("http://") for base in (base_a, base_b))
        env = {**os.environ, "CADDY_UPSTREAMS": upstreams, "CADDY_PORT": str(port),
               "XDG_DATA_HOME": str(tmp_path), "XDG_CONFIG_HOME": str(tmp_path)}
        proc = await asyncio.create_subprocess_exec(
            caddy, "run", "--config", str(ROOT / "deploy" / "Caddyfile"), "--adapter",
            "caddyfile", env=env, stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.DEVNULL)
        proxy = f"http://127.0.0.1:{port}"
        try:
            async with httpx.AsyncClient(base_url=proxy, timeout=10) as client:
                async def ready() -> bool:
                    try:
                        return (await client.get("/readyz")).status_code == 200
                    except httpx.TransportError:
                        return False

                await until(ready, 20)
            _, token = await new_user(proxy)
            async with socket(proxy, token) as (ws1, _), socket(proxy, token) as (ws2, hello):
                # least_conn: the second socket goes to the instance without one.
                assert (app_a.state.hub.open_sockets, app_b.state.hub.open_sockets) == (1, 1)
                await ws1.send(json.dumps({"type": "chat.send", "id": "q", "text": "Hi?"}))
                got: list[dict[str, Any]] = []
                while not got or got[-1]["type"] != "reply.end":
                    got.append(await recv(ws2))
                assert [f["o"] for f in got] == list(range(hello["offset"] + 1, got[-1]["o"] + 1))
                since = got[0]["o"]  # processed only the chat.ack, then the network went
                await ws2.close()
                async with socket(proxy, token, {"since": since, "epoch": hello["epoch"]}
                                  ) as (ws3, _):
                    again = [await recv(ws3)]
                    while again[-1]["type"] != "reply.end":
                        again.append(await recv(ws3))
                # The same events after `since` (replayed deltas may come merged: `parts`).
                assert again[-1] == got[-1]
                assert [f["type"] for f in again if f["type"] != "reply.delta"] == \
                    [f["type"] for f in got[1:] if f["type"] != "reply.delta"]
                assert _text(again) == _text(got)
                assert since + sum(f.get("parts", 1) for f in again) == got[-1]["o"]
        finally:
            proc.terminate()
            await proc.wait()


def test_dockerfile_installs_cpu_torch_before_the_project() -> None:
    lines = [ln.strip() for ln in (ROOT / "Dockerfile").read_text().splitlines()]
    assert lines[[ln.startswith("FROM") for ln in lines].index(True)] == "FROM python:3.11-slim"
    torch = next(i for i, ln in enumerate(lines) if "torch==2.13.0" in ln)
    assert "TORCH_INDEX_URL" in lines[torch]
    project = next(i for i, ln in enumerate(lines) if "pip install -c requirements.lock -e" in ln)
    assert torch < project
    assert any(ln.startswith("COPY") and "requirements.lock" in ln for ln in lines)
    assert any(ln.startswith("VOLUME") and "/data" in ln for ln in lines)
    for folder in ("chat_server", "workers", "migrations"):
        assert any(ln.startswith(f"COPY {folder}") for ln in lines), folder
    cmd = next(ln for ln in lines if ln.startswith("CMD"))
    args = build_parser().parse_args(yaml.safe_load(cmd.removeprefix("CMD"))[1:])
    assert args.command == "serve"
