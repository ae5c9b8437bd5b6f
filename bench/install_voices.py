"""Fetch MBROLA diphone voices into a private folder, without touching the system.

MBROLA voices are recordings of real people, which makes them the most distinct voices the
generator can use, but they live in Debian's contrib/non-free components and their licence forbids
commercial use. So they are never committed and never installed system-wide by us: this module
points apt at a *private* copy of the system's source list with the extra components enabled,
downloads the ``.deb`` files and unpacks them with ``dpkg-deb -x`` under a cache folder. That needs
no root and leaves ``/etc/apt`` and the dpkg database alone.

espeak-ng drives MBROLA (``-v mb-us1``) but only looks for voice files next to its own data
folder or under ``/usr/share/mbrola``. The private install therefore also builds an
``espeak-ng-data`` folder of symlinks to the system's data plus a ``mbrola/`` folder, and callers
run espeak-ng with ``ESPEAK_DATA_PATH`` and ``PATH`` from :func:`mbrola_environment`.

Usage: ``python -m bench.install_voices [--all] [VOICE ...]``.
"""

from __future__ import annotations

import argparse
import logging
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

logger = logging.getLogger(__name__)

DEFAULT_MBROLA_VOICES: tuple[str, ...] = ("us1", "us2", "us3", "en1")

# MBROLA databases espeak-ng can drive with English text: the native ones speak through
# ``mb-<db>``, the others through their accented-English variant ``mb-<db>-en``.
ENGLISH_MBROLA_VOICES: dict[str, str] = {
    "us1": "mb-us1",
    "us2": "mb-us2",
    "us3": "mb-us3",
    "en1": "mb-en1",
    "af1": "mb-af1-en",
    "de1": "mb-de1-en",
    "de2": "mb-de2-en",
    "de3": "mb-de3-en",
    "de4": "mb-de4-en",
    "de5": "mb-de5-en",
    "de6": "mb-de6-en",
    "fr1": "mb-fr1-en",
    "fr4": "mb-fr4-en",
    "gr2": "mb-gr2-en",
    "hu1": "mb-hu1-en",
    "nl2": "mb-nl2-en",
    "pl1": "mb-pl1-en",
    "ro1": "mb-ro1-en",
    "sw1": "mb-sw1-en",
    "sw2": "mb-sw2-en",
}

SYSTEM_MBROLA_DIR = Path("/usr/share/mbrola")
_APT_TIMEOUT_S = 600


def mbrola_home(cache_dir: Path | None = None) -> Path:
    """Folder that holds the private MBROLA install (``SG_MBROLA_DIR`` overrides the default)."""
    if cache_dir is not None:
        return Path(cache_dir)
    env = os.environ.get("SG_MBROLA_DIR")
    if env:
        return Path(env)
    return Path.home() / ".cache" / "speaker-grouping" / "mbrola"


def _private_root(home: Path) -> Path:
    return home / "root"


def mbrola_database(db: str, cache_dir: Path | None = None) -> Path | None:
    """Path of the diphone database file for ``db`` (e.g. ``"us1"``), private install first."""
    candidates = [
        _private_root(mbrola_home(cache_dir)) / "usr" / "share" / "mbrola" / db / db,
        SYSTEM_MBROLA_DIR / db / db,
        SYSTEM_MBROLA_DIR / db,
        SYSTEM_MBROLA_DIR / "voices" / db,
    ]
    for path in candidates:
        if path.is_file():
            return path
    return None


def mbrola_binary(cache_dir: Path | None = None) -> Path | None:
    private = _private_root(mbrola_home(cache_dir)) / "usr" / "bin" / "mbrola"
    if private.is_file() and os.access(private, os.X_OK):
        return private
    found = shutil.which("mbrola")
    return Path(found) if found else None


def mbrola_environment(cache_dir: Path | None = None) -> dict[str, str]:
    """Environment for an espeak-ng process that must find MBROLA voices from the private install.

    Returns the current environment unchanged when there is no private install (a system-wide
    ``mbrola`` package works without help).
    """
    env = dict(os.environ)
    home = mbrola_home(cache_dir)
    if (home / "espeak-ng-data" / "mbrola").is_dir():
        env["ESPEAK_DATA_PATH"] = str(home)
        private_bin = _private_root(home) / "usr" / "bin"
        env["PATH"] = f"{private_bin}{os.pathsep}{env.get('PATH', '')}"
    return env


def installed_mbrola_voices(cache_dir: Path | None = None) -> list[str]:
    """English-capable MBROLA databases usable here, in ``ENGLISH_MBROLA_VOICES`` order."""
    if mbrola_binary(cache_dir) is None or shutil.which("espeak-ng") is None:
        return []
    home = mbrola_home(cache_dir)
    private_links = home / "espeak-ng-data" / "mbrola"
    found = []
    for db in ENGLISH_MBROLA_VOICES:
        private_ok = (private_links / db).is_file()
        system_ok = any(
            p.is_file()
            for p in (
                SYSTEM_MBROLA_DIR / db / db,
                SYSTEM_MBROLA_DIR / db,
                SYSTEM_MBROLA_DIR / "voices" / db,
            )
        )
        if private_ok or system_ok:
            found.append(db)
    return found


def _system_espeak_data() -> Path | None:
    """espeak-ng reports its data folder in ``--version``; that is the folder we mirror."""
    try:
        out = subprocess.run(
            ["espeak-ng", "--version"], capture_output=True, text=True, timeout=30, check=False
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    match = re.search(r"Data at:\s*(\S+)", out)
    return Path(match.group(1)) if match else None


def _extra_components() -> list[str]:
    ident = _os_release().get("ID", "")
    return ["universe", "multiverse"] if ident == "ubuntu" else ["contrib", "non-free"]


def _os_release() -> dict[str, str]:
    values: dict[str, str] = {}
    try:
        text = Path("/etc/os-release").read_text(encoding="utf-8")
    except OSError:
        return values
    for line in text.splitlines():
        key, sep, value = line.partition("=")
        if sep:
            values[key.strip()] = value.strip().strip('"')
    return values


def private_sources(extra: Sequence[str] | None = None) -> str:
    """deb822 sources text: the system's Debian/Ubuntu stanzas with the extra components added.

    Third-party repositories are left out, since they rarely have those components and a 404
    there would only add noise to the log.
    """
    extra = list(extra or _extra_components())
    stanzas: list[str] = []
    parts = Path("/etc/apt/sources.list.d")
    files = sorted(parts.glob("*.sources")) if parts.is_dir() else []
    for path in files:
        try:
            text = path.read_text(encoding="utf-8")
        except OSError:
            continue
        for stanza in re.split(r"\n\s*\n", text):
            if not re.search(r"^URIs:.*(debian|ubuntu)", stanza, flags=re.M | re.I):
                continue
            if re.search(r"^Enabled:\s*no", stanza, flags=re.M | re.I):
                continue

            def add_components(match: re.Match[str]) -> str:
                components = match.group(1).split()
                components += [c for c in extra if c not in components]
                return "Components: " + " ".join(components)

            stanzas.append(
                re.sub(r"^Components:\s*(.*)$", add_components, stanza.strip(), flags=re.M)
            )
    one_line = Path("/etc/apt/sources.list")
    if one_line.is_file():
        for raw in one_line.read_text(encoding="utf-8", errors="replace").splitlines():
            fields = raw.split("#", 1)[0].split()
            if len(fields) < 4 or fields[0] != "deb" or fields[1].startswith("["):
                continue
            uri, suite, components = fields[1], fields[2], fields[3:]
            if not re.search(r"debian|ubuntu", uri, flags=re.I):
                continue
            components += [c for c in extra if c not in components]
            stanzas.append(
                f"Types: deb\nURIs: {uri}\nSuites: {suite}\nComponents: {' '.join(components)}"
            )
    if not stanzas:
        release = _os_release()
        codename = release.get("VERSION_CODENAME")
        if release.get("ID") == "debian" and codename:
            stanzas.append(
                "Types: deb\nURIs: http://deb.debian.org/debian\n"
                f"Suites: {codename}\nComponents: main {' '.join(extra)}\n"
                "Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg"
            )
    return "\n\n".join(stanzas) + "\n"


def _apt_options(home: Path) -> list[str]:
    apt = home / "apt"
    options = [
        "-o", "Dir::Etc::sourcelist=/dev/null",
        "-o", f"Dir::Etc::sourceparts={apt / 'sources'}",
        "-o", f"Dir::State::Lists={apt / 'lists'}",
        "-o", f"Dir::Cache={apt / 'cache'}",
    ]  # fmt: skip
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        # As root apt hands downloads to the _apt user, which cannot write into our folders.
        options += ["-o", "APT::Sandbox::User=root"]
    return options


def _run(command: list[str], *, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    logger.debug("running %s", " ".join(command))
    return subprocess.run(
        command, cwd=cwd, capture_output=True, text=True, timeout=_APT_TIMEOUT_S, check=False
    )


def _last_line(text: str) -> str:
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return lines[-1] if lines else ""


def _download_and_unpack(packages: Sequence[str], home: Path) -> list[str]:
    """Download each package alone (one unknown name must not sink the others) and unpack it.

    Returns the packages that failed.
    """
    debs = home / "debs"
    debs.mkdir(parents=True, exist_ok=True)
    root = _private_root(home)
    root.mkdir(parents=True, exist_ok=True)
    failed = []
    for package in packages:
        existing = sorted(debs.glob(f"{package}_*.deb"))
        if not existing:
            result = _run(["apt-get", *_apt_options(home), "download", package], cwd=debs)
            if result.returncode != 0:
                logger.info("could not download %s: %s", package, _last_line(result.stderr))
                failed.append(package)
                continue
            existing = sorted(debs.glob(f"{package}_*.deb"))
        if not existing:
            logger.warning("apt-get download %s left no .deb in %s", package, debs)
            failed.append(package)
            continue
        result = _run(["dpkg-deb", "-x", str(existing[-1]), str(root)])
        if result.returncode != 0:
            logger.warning("could not unpack %s: %s", existing[-1], _last_line(result.stderr))
            failed.append(package)
            continue
        existing[-1].unlink()  # unpacked: the archive would only double the disk use
    return failed


def _link_espeak_data(home: Path, databases: Sequence[str]) -> None:
    """Mirror the system espeak-ng data folder with symlinks and add our ``mbrola/`` folder."""
    system_data = _system_espeak_data()
    if system_data is None or not system_data.is_dir():
        logger.warning("espeak-ng data folder not found; MBROLA voices will not be usable")
        return
    data = home / "espeak-ng-data"
    data.mkdir(parents=True, exist_ok=True)
    for entry in system_data.iterdir():
        if entry.name == "mbrola":
            continue
        link = data / entry.name
        if link.is_symlink() or link.exists():
            if link.is_symlink() and os.readlink(link) == str(entry):
                continue
            link.unlink()
        link.symlink_to(entry)
    mbrola_links = data / "mbrola"
    mbrola_links.mkdir(exist_ok=True)
    for db in databases:
        target = _private_root(home) / "usr" / "share" / "mbrola" / db / db
        if not target.is_file():
            continue
        link = mbrola_links / db
        if link.is_symlink() or link.exists():
            link.unlink()
        link.symlink_to(target)


def _voice_works(db: str, home: Path) -> bool:
    espeak_voice = ENGLISH_MBROLA_VOICES.get(db, f"mb-{db}")
    try:
        result = subprocess.run(
            ["espeak-ng", "-q", "--pho", "-v", espeak_voice, "test"],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
            env=mbrola_environment(home),
        )
    except (OSError, subprocess.SubprocessError) as error:
        logger.warning("espeak-ng failed for %s: %s", espeak_voice, error)
        return False
    if result.returncode != 0 or not result.stdout.strip():
        logger.warning("espeak-ng cannot use %s: %s", espeak_voice, _last_line(result.stderr))
        return False
    return True


def install_mbrola_voices(
    voices: Sequence[str] = DEFAULT_MBROLA_VOICES, *, cache_dir: Path | None = None
) -> list[str]:
    """Make the MBROLA databases ``voices`` usable by espeak-ng; return those that now work.

    Best effort by design: the benchmark must still run on machines without network, apt or
    non-free mirrors, so every failure is logged and the voice is simply left out.
    """
    home = mbrola_home(cache_dir)
    wanted = list(dict.fromkeys(voices))
    unknown = [v for v in wanted if v not in ENGLISH_MBROLA_VOICES]
    if unknown:
        logger.warning("not English-capable MBROLA voices, skipped: %s", ", ".join(unknown))
        wanted = [v for v in wanted if v in ENGLISH_MBROLA_VOICES]
    if shutil.which("espeak-ng") is None:
        logger.warning("espeak-ng is not installed; MBROLA voices need it")
        return []
    ready = installed_mbrola_voices(home)
    missing = [v for v in wanted if v not in ready]
    if missing:
        for tool in ("apt-get", "dpkg-deb"):
            if shutil.which(tool) is None:
                logger.warning("%s is not available; cannot fetch MBROLA voices", tool)
                return [v for v in wanted if v in ready]
        sources = home / "apt" / "sources"
        sources.mkdir(parents=True, exist_ok=True)
        for sub in ("lists/partial", "cache/archives/partial"):
            (home / "apt" / sub).mkdir(parents=True, exist_ok=True)
        (sources / "private.sources").write_text(private_sources(), encoding="utf-8")
        packages = ["mbrola", *(f"mbrola-{v}" for v in missing)]
        if mbrola_binary(home) is not None:
            packages.remove("mbrola")
        failed = _download_and_unpack(packages, home)
        if failed:
            # The private package lists are missing or stale: refresh them once and retry.
            logger.info("updating private apt lists in %s", home / "apt" / "lists")
            result = _run(["apt-get", *_apt_options(home), "update"])
            if result.returncode != 0:
                logger.warning("private apt-get update failed: %s", _last_line(result.stderr))
            failed = _download_and_unpack(failed, home)
            if failed:
                logger.warning("could not fetch: %s", ", ".join(failed))
        _link_espeak_data(home, [v for v in ENGLISH_MBROLA_VOICES if v in wanted or v in ready])
    working = [v for v in wanted if _voice_works(v, home)]
    logger.info("MBROLA voices ready: %s", ", ".join(working) or "none")
    return working


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("voices", nargs="*", help="MBROLA databases, e.g. us1 en1 de2")
    parser.add_argument("--all", action="store_true", help="every English-capable database")
    parser.add_argument("--dir", type=Path, default=None, help="install folder")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    wanted = list(ENGLISH_MBROLA_VOICES) if args.all else (args.voices or DEFAULT_MBROLA_VOICES)
    working = install_mbrola_voices(wanted, cache_dir=args.dir)
    print(" ".join(working))
    return 0 if working else 1


if __name__ == "__main__":
    sys.exit(main())
