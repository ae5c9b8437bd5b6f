"""The Dockerfile and docker-compose.yml, checked without Docker: what can be read statically
(base image, torch pin, user, ports, volumes, env) and what the image will run (the WSGI target,
loaded the way gunicorn loads it)."""

from __future__ import annotations

import ast
import fnmatch
import importlib.util
import json
import re
import shlex
import tomllib
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
WSGI_TARGET = "ml_backend.server:create_app()"


def dockerfile_instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) in order; continuation lines joined, comments dropped."""
    instructions: list[tuple[str, str]] = []
    pending = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if pending and line.startswith("#"):
            continue  # a comment inside a continued instruction
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        line = pending + line
        pending = ""
        keyword, _, arguments = line.partition(" ")
        instructions.append((keyword.upper(), " ".join(arguments.split())))
    assert not pending, "the Dockerfile ends inside a continued line"
    return instructions


def exec_form(arguments: str) -> list[str]:
    value = json.loads(arguments)
    assert isinstance(value, list) and all(isinstance(item, str) for item in value)
    return value


@pytest.fixture(scope="module")
def dockerfile() -> list[tuple[str, str]]:
    return dockerfile_instructions((REPO / "Dockerfile").read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def stages(dockerfile) -> list[list[tuple[str, str]]]:
    split: list[list[tuple[str, str]]] = []
    for keyword, arguments in dockerfile:
        if keyword == "FROM":
            split.append([])
        split[-1].append((keyword, arguments))
    return split


_MOUNT = re.compile(r"(\$\{[^}]*\}|[^:]+):([^:]+)(?::(ro|rw))?")


def mounts_of(service: dict) -> dict[str, tuple[str, str]]:
    """target -> (source, mode) of a service's short-syntax volumes (sources may be ${VAR:-x})."""
    found: dict[str, tuple[str, str]] = {}
    for volume in service["volumes"]:
        match = _MOUNT.fullmatch(volume)
        assert match, f"unreadable volume {volume!r}"
        found[match.group(2)] = (match.group(1), match.group(3) or "rw")
    return found


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load((REPO / "docker-compose.yml").read_text(encoding="utf-8"))


# --------------------------------------------------------------------------- Dockerfile


def test_parser_joins_continuations_and_skips_comments():
    text = '# c\nFROM a AS b\nRUN x \\\n    # inside\n    && y\n\nCMD ["z"]\n'
    assert dockerfile_instructions(text) == [
        ("FROM", "a AS b"),
        ("RUN", "x && y"),
        ("CMD", '["z"]'),
    ]


def test_every_stage_is_python_311_slim(stages):
    for stage in stages:
        _, arguments = stage[0]
        assert arguments.split()[0] == "python:3.11-slim"


def test_torch_is_the_pinned_cpu_build_installed_before_the_project(dockerfile):
    text = " ".join(f"{keyword} {arguments}" for keyword, arguments in dockerfile)
    args = dict(arguments.split("=", 1) for keyword, arguments in dockerfile if keyword == "ARG")
    assert args["TORCH_VERSION"] == "2.13.0"
    assert args["TORCH_INDEX_URL"] == "https://download.pytorch.org/whl/cpu"
    torch_at = text.index('"torch==${TORCH_VERSION}" --index-url "${TORCH_INDEX_URL}"')
    assert torch_at < text.index("pip install . ")
    assert "setuptools<81" in text  # resemblyzer's webrtcvad needs pkg_resources


def test_runtime_runs_gunicorn_as_a_non_root_user_on_9090(stages):
    runtime = stages[-1]
    users = [arguments for keyword, arguments in runtime if keyword == "USER"]
    assert users and users[-1] not in ("root", "0", "0:0")
    user_at = max(i for i, (keyword, _) in enumerate(runtime) if keyword == "USER")
    cmd_at = max(i for i, (keyword, _) in enumerate(runtime) if keyword == "CMD")
    assert user_at < cmd_at
    assert ("EXPOSE", "9090") in runtime
    assert exec_form(runtime[cmd_at][1]) == ["gunicorn", WSGI_TARGET]
    env = " ".join(arguments for keyword, arguments in runtime if keyword == "ENV")
    gunicorn_args = re.search(r'GUNICORN_CMD_ARGS="([^"]*)"', env)
    assert gunicorn_args is not None
    assert "--bind=0.0.0.0:9090" in gunicorn_args.group(1).split()
    assert "--workers=1" in gunicorn_args.group(1).split()  # state lives in the process


def test_healthcheck_asks_the_backend_health_endpoint(stages):
    (healthcheck,) = [arguments for keyword, arguments in stages[-1] if keyword == "HEALTHCHECK"]
    options, _, command = healthcheck.partition(" CMD ")
    assert "--interval=" in options
    argv = exec_form(command)
    assert argv[:2] == ["python", "-c"]
    assert "http://127.0.0.1:9090/health" in argv[2]
    compile(argv[2], "healthcheck", "exec")


def test_every_copied_path_exists_and_is_in_the_build_context(dockerfile):
    ignored = [
        line.strip()
        for line in (REPO / ".dockerignore").read_text(encoding="utf-8").splitlines()
        if line.strip() and not line.startswith("#")
    ]
    copies = [arguments for keyword, arguments in dockerfile if keyword in ("COPY", "ADD")]
    assert copies
    checked = 0
    for arguments in copies:
        words = shlex.split(arguments)
        if any(word.startswith("--from=") for word in words):
            continue
        sources = [word for word in words if not word.startswith("--")][:-1]
        for source in sources:
            assert (REPO / source).exists(), f"COPY {source}: no such file in the repository"
            assert not any(fnmatch.fnmatch(source, pattern) for pattern in ignored), (
                f"COPY {source}: excluded by .dockerignore"
            )
            checked += 1
    assert checked >= 3


def test_every_package_the_project_installs_is_copied(dockerfile):
    """`pip install .` in the image sees only what was copied; a package left out would import
    in the development checkout and fail in the container."""
    project = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))
    patterns = project["tool"]["setuptools"]["packages"]["find"]["include"]
    copied = {
        shlex.split(arguments)[0].rstrip("/")
        for keyword, arguments in dockerfile
        if keyword == "COPY" and "--from=" not in arguments
    }
    packages = {
        path.parent.name for path in REPO.glob("*/__init__.py") if path.parent.name != "tests"
    }
    for package in packages:
        if any(fnmatch.fnmatch(package, pattern) for pattern in patterns):
            assert package in copied, f"{package} is installed by pyproject but not COPY'd"
    assert "README.md" in " ".join(a for k, a in dockerfile if k == "COPY")  # pyproject readme


def test_the_project_installs_every_package_the_image_needs():
    """The image installs the project as a wheel: a package missing from
    ``[tool.setuptools.packages.find]`` would be absent in the container."""
    project = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))
    patterns = project["tool"]["setuptools"]["packages"]["find"]["include"]
    for package in ("importers", "ml_backend", "label_config", "speaker_grouping", "exporters"):
        assert any(fnmatch.fnmatch(package, pattern) for pattern in patterns), package


def test_package_data_files_are_declared():
    """Non-Python files inside the packages (label config, shipped priors) reach the wheel only
    as package data."""
    project = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))
    declared = project["tool"]["setuptools"].get("package-data", {})
    for package in ("ml_backend", "label_config", "importers", "exporters"):
        root = REPO / package
        for path in root.rglob("*"):
            if not path.is_file() or path.suffix in (".py", ".pyc") or "__pycache__" in path.parts:
                continue
            owner = path.parent
            while not (owner / "__init__.py").exists() and owner != root:
                owner = owner.parent
            dotted = ".".join(owner.relative_to(REPO).parts)
            relative = path.relative_to(owner).as_posix()
            patterns = declared.get(dotted, []) + declared.get("*", [])
            assert any(fnmatch.fnmatch(relative, pattern) for pattern in patterns), (
                f"{path.relative_to(REPO)} is not package data of {dotted} in pyproject.toml"
            )


def test_wsgi_target_is_an_app_factory_callable_without_arguments():
    module_name, _, call = WSGI_TARGET.partition(":")
    spec = importlib.util.find_spec(module_name)
    assert spec is not None and spec.origin is not None
    tree = ast.parse(Path(spec.origin).read_text(encoding="utf-8"))
    (factory,) = [
        node
        for node in tree.body
        if isinstance(node, ast.FunctionDef) and node.name == call.removesuffix("()")
    ]
    arguments = factory.args
    assert len(arguments.defaults) == len(arguments.args)  # every argument has a default
    assert len(arguments.kw_defaults) == len(arguments.kwonlyargs)
    assert None not in arguments.kw_defaults


def test_gunicorn_loads_the_target_and_it_answers_health(tmp_path, monkeypatch):
    gunicorn_util = pytest.importorskip("gunicorn.util")
    monkeypatch.setenv("MODEL_DIR", str(tmp_path / "models"))
    for name in ("BASIC_AUTH_USER", "BASIC_AUTH_PASS", "LABEL_STUDIO_URL", "LABEL_STUDIO_API_KEY"):
        monkeypatch.delenv(name, raising=False)
    app = gunicorn_util.import_app(WSGI_TARGET)
    response = app.test_client().get("/health")
    assert response.status_code == 200
    assert response.get_json()["status"] == "UP"
    assert (tmp_path / "models").is_dir()


# --------------------------------------------------------------------------- docker-compose.yml


def test_compose_has_label_studio_and_the_backend(compose):
    assert {"label-studio", "ml-backend"} <= set(compose["services"])
    studio = compose["services"]["label-studio"]
    assert re.fullmatch(r"heartexlabs/label-studio:1\.23\.\d+", studio["image"])
    backend = compose["services"]["ml-backend"]
    assert backend["build"]["context"] == "." and backend["build"]["dockerfile"] == "Dockerfile"
    assert any(str(port).endswith(":8080") for port in studio["ports"])


def test_the_backend_port_stays_on_the_compose_network(compose):
    """Issue 12 row 5: 9090 was published on every interface. Label Studio reaches the backend
    as http://ml-backend:9090 on the compose network; publishing it is left to an override."""
    backend = compose["services"]["ml-backend"]
    assert "ports" not in backend
    assert [str(port) for port in backend["expose"]] == ["9090"]


def test_the_backend_requires_basic_auth_when_deployed(compose):
    """Compose sets SG_REQUIRE_AUTH and makes both credentials mandatory (`${VAR:?message}`);
    the backend itself refuses to start without them (tests/test_backend_security.py)."""
    env = compose["services"]["ml-backend"]["environment"]
    assert env["SG_REQUIRE_AUTH"] == "1"
    for name in ("BASIC_AUTH_USER", "BASIC_AUTH_PASS"):
        assert re.fullmatch(rf"\$\{{{name}:\?[^}}]+\}}", env[name]), env[name]


def test_label_studio_serves_local_files_and_may_call_a_private_backend(compose):
    env = compose["services"]["label-studio"]["environment"]
    assert env["LABEL_STUDIO_LOCAL_FILES_SERVING_ENABLED"] == "true"
    root = env["LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT"]
    assert env["SSRF_PROTECTION_ENABLED"] == "false"
    assert env["ML_BLOCK_LOCAL_IP"] == "false"  # docs/architecture.md §7: both are needed
    assert env["LABEL_STUDIO_ENABLE_LEGACY_API_TOKEN"] == "true"
    assert "LABEL_STUDIO_API_KEY" in env["LABEL_STUDIO_USER_TOKEN"]  # one token for both sides
    mounts = mounts_of(compose["services"]["label-studio"])
    assert root in mounts
    assert "/label-studio/data" in mounts


def test_backend_reaches_label_studio_and_reads_media_read_only(compose):
    backend = compose["services"]["ml-backend"]
    env = backend["environment"]
    assert env["LABEL_STUDIO_URL"] == "http://label-studio:8080"
    assert "LABEL_STUDIO_API_KEY" in env and "BASIC_AUTH_USER" in env and "BASIC_AUTH_PASS" in env
    model_dir = env["MODEL_DIR"]
    mounts = mounts_of(backend)
    assert model_dir in mounts and mounts[model_dir][0] in compose["volumes"]
    root = env["LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT"]
    studio = compose["services"]["label-studio"]
    assert root == studio["environment"]["LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT"]
    assert mounts[root][1] == "ro"
    assert mounts[root][0] == mounts_of(studio)[root][0]  # the same media in both containers
    health = backend["healthcheck"]["test"]
    assert health[0] == "CMD" and "http://127.0.0.1:9090/health" in health[-1]


def test_tools_container_writes_media_where_label_studio_reads_it(compose):
    tools = compose["services"]["tools"]
    assert tools["profiles"] == ["tools"]  # not started by `docker compose up`
    mounts = mounts_of(tools)
    root = tools["environment"]["LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT"]
    assert mounts[root][1] == "rw"
    assert mounts[root][0] == mounts_of(compose["services"]["ml-backend"])[root][0]
    assert tools["image"] == compose["services"]["ml-backend"]["image"]


def _variables_the_backend_reads() -> set[str]:
    """Environment variable names read anywhere in ml_backend/ (os.environ, getenv, the config's
    helpers, and *_ENV constants)."""
    pattern = re.compile(
        r"""(?:environ\.get|env\.get|getenv|environ\[|\btext|_number\(\s*env,)\(?\s*["']([A-Z][A-Z0-9_]+)["']"""
        r"""|_ENV\s*=\s*["']([A-Z][A-Z0-9_]+)["']"""
    )
    names: set[str] = set()
    for path in (REPO / "ml_backend").rglob("*.py"):
        for match in pattern.finditer(path.read_text(encoding="utf-8")):
            names.add(match.group(1) or match.group(2))
    return names


def test_every_variable_the_backend_reads_is_documented_in_compose():
    names = _variables_the_backend_reads()
    assert {"MODEL_DIR", "LABEL_STUDIO_URL", "BASIC_AUTH_USER"} <= names  # the scan works
    text = (REPO / "docker-compose.yml").read_text(encoding="utf-8")
    missing = sorted(name for name in names if not re.search(rf"\b{name}\b", text))
    assert not missing, f"read by ml_backend but not in docker-compose.yml: {missing}"


# ---------------------------------------------------------------------------- PostgreSQL


def _label_studio_settings() -> list[Path]:
    """Label Studio's base settings in the environment its executable lives in, if installed."""
    from speaker_grouping.local_label_studio import find_label_studio

    try:
        venv = find_label_studio().parent.parent  # <venv>/bin/label-studio, never resolved
    except FileNotFoundError:
        return []
    return sorted(venv.glob("lib/python3*/site-packages/label_studio/core/settings/base.py"))


_LS_SETTINGS = _label_studio_settings()


def test_label_studio_runs_on_the_compose_postgres(compose):
    """Label Studio's database is the `postgres` service: DJANGO_DB=default and every POSTGRE_*
    variable matches what that service creates, and Label Studio waits for it to be healthy."""
    services = compose["services"]
    database = services["postgres"]
    assert re.fullmatch(r"postgres:\d+(\.\d+)?(-[a-z]+)?", database["image"])  # a pinned major
    db_env = database["environment"]
    studio = services["label-studio"]
    env = studio["environment"]
    assert env["DJANGO_DB"] == "default"
    assert env["POSTGRE_HOST"] == "postgres"  # the service name on the compose network
    assert str(env["POSTGRE_PORT"]) == "5432"
    assert env["POSTGRE_NAME"] == db_env["POSTGRES_DB"]
    assert env["POSTGRE_USER"] == db_env["POSTGRES_USER"]
    assert env["POSTGRE_PASSWORD"] == db_env["POSTGRES_PASSWORD"]
    assert studio["depends_on"]["postgres"]["condition"] == "service_healthy"
    health = database["healthcheck"]["test"]
    assert health[:2] == ["CMD", "pg_isready"] and db_env["POSTGRES_USER"] in health


def test_the_database_is_secure_by_default(compose):
    """No published port, no default password (`${VAR:?message}` stops compose without one),
    and its data in a named volume."""
    database = compose["services"]["postgres"]
    assert "ports" not in database and "network_mode" not in database
    password = database["environment"]["POSTGRES_PASSWORD"]
    assert re.fullmatch(r"\$\{POSTGRES_PASSWORD:\?[^}]+\}", password), password
    assert "POSTGRES_HOST_AUTH_METHOD" not in database["environment"]  # never "trust"
    mounts = mounts_of(database)
    assert mounts["/var/lib/postgresql/data"][0] in compose["volumes"]
    text = (REPO / "docker-compose.yml").read_text(encoding="utf-8")
    assert re.search(r"^#\s+POSTGRES_PASSWORD\s+required", text, re.MULTILINE)  # documented


@pytest.mark.skipif(not _LS_SETTINGS, reason="Label Studio is not installed in .venv-ls")
def test_compose_sets_every_database_variable_label_studio_reads():
    """The names come from the installed Label Studio's own settings, not from memory."""
    settings = _LS_SETTINGS[0].read_text(encoding="utf-8")
    read = set(re.findall(r"get_env\('(POSTGRE_[A-Z]+)'", settings))
    assert read == {
        "POSTGRE_NAME",
        "POSTGRE_USER",
        "POSTGRE_PASSWORD",
        "POSTGRE_HOST",
        "POSTGRE_PORT",
    }
    assert "get_env('DJANGO_DB', 'default')" in settings
    compose = yaml.safe_load((REPO / "docker-compose.yml").read_text(encoding="utf-8"))
    assert read <= set(compose["services"]["label-studio"]["environment"])
