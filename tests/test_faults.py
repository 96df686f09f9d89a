"""Faults: SIGKILL at random (seeded) moments during ``qfk convert`` and during registry writes, a
full disk (a 2 MiB tmpfs where one can be mounted, and a file size limit everywhere), and eight
processes writing the registry at once.

After each fault every output is the file from before or the file from after, whole (sha256
compared with both); dataset_info.json parses, validates and names only existing files; the next
run leaves no temporary file of a dead process. Each test records its counts through
tests/reliability.py (the summary line at the end of a pytest run)."""

from __future__ import annotations

import errno
import hashlib
import json
import multiprocessing
import os
import random
import resource
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import EXAMPLES, ROOT, write_jsonl
from hostile_cases import record

from qwen_factory_kit.cli.main import main
from qwen_factory_kit.errors import QfkError
from qwen_factory_kit.io.atomic import TEMP_RE, AtomicFile, disk_error, process_exists, sweep_stale_temps
from qwen_factory_kit.registry import INFO_NAME, Registry, validate_entry

pytestmark = pytest.mark.skipif(os.name != "posix", reason="SIGKILL, fork and rlimits are POSIX")

FORK = multiprocessing.get_context("fork")
SEED = 20240611
KILLS = 25  # per test: 50 in all
OUTPUTS = ("med.jsonl", "med_val.jsonl", "med.rejects.jsonl", "med.manifest.json", INFO_NAME)


# ---------------------------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------------------------
def medical_rows(path: Path, n: int, seed: int) -> Path:
    """``n`` generated medical-r1 rows (every 97th without its reasoning: rejected)."""
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        row = {"instruction": "解释", "question": f"问题 {i} " + "x" * rng.randint(5, 40), "think": "想" * rng.randint(5, 40),
               "answer": "答" * rng.randint(5, 40), "metrics": {"quality_f1": round(rng.random(), 3)}}
        if i % 97 == 0:
            del row["think"]
        rows.append(row)
    return write_jsonl(path, rows)


def sha(path: Path) -> str | None:
    return hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else None


def shas(folder: Path, names=OUTPUTS) -> dict[str, str | None]:
    return {n: sha(folder / n) for n in names}


def temps(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if TEMP_RE.match(p.name))


def rows_accounted(data: Path, n: int) -> bool:
    """Every source row of med is in a split file or the rejects file, as the manifest counts them."""
    counts = json.loads((data / "med.manifest.json").read_text())["counts"]
    lines = {name: len((data / name).read_bytes().splitlines()) for name in ("med.jsonl", "med_val.jsonl", "med.rejects.jsonl")}
    return (counts["read"] == n == counts["written"] + counts["rejected"]
            and lines["med.jsonl"] + lines["med_val.jsonl"] == counts["written"] and lines["med.rejects.jsonl"] == counts["rejected"])


def registry_bytes(entries: dict) -> bytes:
    """dataset_info.json as the registry writes it."""
    return (json.dumps(entries, ensure_ascii=False, indent=2) + "\n").encode("utf-8")


def _cli(argv: list) -> None:
    raise SystemExit(main([str(a) for a in argv]))


def _cli_loop(commands: list[list]) -> None:
    for argv in commands:
        code = main([str(a) for a in argv])
        if code:
            raise SystemExit(code)


def killed(target, args: tuple, delay: float) -> bool:
    """Run ``target(*args)`` in a forked process (qfk already imported: no start-up time), SIGKILL
    it after ``delay`` seconds and reap it; whether the kill landed before it ended by itself."""
    child = FORK.Process(target=target, args=args)
    child.start()
    child.join(delay)
    landed = child.is_alive()
    if landed:
        os.kill(child.pid, signal.SIGKILL)
    child.join()
    return landed


def convert_args(src: Path, data: Path) -> list:
    return ["convert", "medical-r1", src, "--data-dir", data, "--name", "med", "--val-size", "500", "--register",
            "--no-progress"]


# ---------------------------------------------------------------------------------------------
# the sweep and the disk errors, alone
# ---------------------------------------------------------------------------------------------
def _dead_pid() -> int:
    child = FORK.Process(target=int)
    child.start()
    child.join()
    assert not process_exists(child.pid)
    return child.pid


def test_sweep_removes_only_dead_processes_temporary_files(tmp_path):
    dead, live = _dead_pid(), os.getppid()
    names = {f".a.jsonl.{dead}.tmp": False, f".dataset_info.json.{dead}.tmp": False, f".a.jsonl.{os.getpid()}.tmp": True,
             f".a.jsonl.{live}.tmp": True, f"a.jsonl.{dead}.tmp": True, ".a.jsonl.tmp": True, f".a.jsonl.{dead}x.tmp": True,
             f".a.jsonl.{dead}.tmp.keep": True, "a.jsonl": True}
    for n in names:
        (tmp_path / n).write_text("x")
    (tmp_path / f".d.{dead}.tmp").mkdir()  # a folder of the pattern: not a file the kit writes
    (tmp_path / f".l.{dead}.tmp").symlink_to(tmp_path / "a.jsonl")
    removed = sweep_stale_temps(tmp_path)
    assert sorted(p.name for p in removed) == sorted(n for n, keep in names.items() if not keep)
    assert all((tmp_path / n).exists() == keep for n, keep in names.items())
    assert (tmp_path / f".d.{dead}.tmp").is_dir() and (tmp_path / f".l.{dead}.tmp").is_symlink()
    assert sweep_stale_temps(tmp_path / "absent") == []


def test_convert_and_registry_writes_sweep_what_killed_runs_left(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    dead = _dead_pid()
    left = [data / f".med.jsonl.{dead}.tmp", data / f".med.rejects.jsonl.{dead}.tmp"]
    for p in left:
        p.write_text("half a row")
    assert main(["convert", "medical-r1", str(EXAMPLES / "medical_r1" / "rows.jsonl"), "--data-dir", str(data),
                 "--name", "med", "--no-register"]) == 0
    assert temps(data) == []
    left = data / f".{INFO_NAME}.{dead}.tmp"
    left.write_text("{")
    Registry(data).add("x", {"file_name": "med.jsonl"})
    assert temps(data) == [] and json.loads((data / INFO_NAME).read_text()) == {"x": {"file_name": "med.jsonl"}}


def test_disk_errors_name_the_file_and_remove_the_temporary_file(tmp_path):
    target = tmp_path / "out.jsonl"
    for code, words in ((errno.ENOSPC, "no space left"), (errno.EFBIG, "file too large"), (errno.EDQUOT, "quota")):
        err = disk_error(OSError(code, os.strerror(code)), target)
        assert isinstance(err, QfkError) and words in err.message and str(target) in err.message and "\n" not in err.message
    assert disk_error(OSError(errno.EACCES, "denied"), target) is None

    class Full:
        def write(self, data):
            raise OSError(errno.ENOSPC, "No space left on device")

        def close(self):
            raise OSError(errno.ENOSPC, "No space left on device")  # the buffered tail cannot be flushed either

    fh = AtomicFile(target)
    fh._fh.close()
    fh._fh = Full()
    with pytest.raises(QfkError, match="no space left"):
        fh.write(b"row\n")
    assert not fh.tmp.exists() and not target.exists()


# ---------------------------------------------------------------------------------------------
# SIGKILL at random moments
# ---------------------------------------------------------------------------------------------
@pytest.mark.slow
def test_sigkill_during_convert_leaves_each_file_whole(tmp_path):
    """25 kills during conversions of 20,000 rows that alternate between two sources (so every
    file has a known before and after): each file is one of the two, whole."""
    src = [medical_rows(tmp_path / "src" / "a.jsonl", 20_000, 1), medical_rows(tmp_path / "src" / "b.jsonl", 20_000, 2)]
    data = tmp_path / "data"
    states, took = [], []
    for s in src:
        start = time.monotonic()
        assert main([str(a) for a in convert_args(s, data)]) == 0
        took.append(time.monotonic() - start)
        states.append(shas(data))
    assert all(states[0][n] != states[1][n] for n in OUTPUTS if n != INFO_NAME)
    rng = random.Random(SEED)
    landed = lost = mixed = temps_left = 0
    for i in range(40):  # until KILLS landed (a run may end before its kill)
        if landed == KILLS:
            break
        landed += killed(_cli, (convert_args(src[i % 2], data),), rng.uniform(0.0, 1.1 * max(took)))
        now = shas(data)
        whole = all(now[n] in (states[0][n], states[1][n]) for n in OUTPUTS)
        lost += not whole
        mixed += whole and now not in states  # killed between two renames: each file whole, some new
        temps_left += len(temps(data))
    assert main([str(a) for a in convert_args(src[0], data)]) == 0
    after = shas(data)
    lost += after != states[0] or not rows_accounted(data, 20_000)
    record("SIGKILL during qfk convert", landed, landed - lost, lost)
    assert lost == 0 and landed == KILLS, (landed, lost)
    assert temps_left > 0 and temps(data) == []  # what the killed runs left was swept by the next one
    print(f"convert: {landed} kills, {mixed} between two renames, {temps_left} temporary files seen after them, then swept")


def _killed_after_renames(argv: list, renames: int) -> None:
    """qfk ARGV that SIGKILLs itself right after its first ``renames`` atomic renames."""
    real, done = os.replace, []

    def rename_then_die(src, dst):
        real(src, dst)
        done.append(dst)
        if len(done) == renames:
            os.kill(os.getpid(), signal.SIGKILL)

    os.replace = rename_then_die
    _cli(argv)


@pytest.mark.slow
def test_sigkill_between_the_renames_of_one_conversion(tmp_path):
    """The files of one conversion are renamed one after the other: a kill between two renames
    leaves each file whole, the first ones new and the rest (the manifest last) old; the manifest's
    sha256 of each output tells which. The next run completes them."""
    src = [medical_rows(tmp_path / "src" / "a.jsonl", 2_000, 1), medical_rows(tmp_path / "src" / "b.jsonl", 2_000, 2)]
    data = tmp_path / "data"
    states = []
    for s in src:
        assert main([str(a) for a in convert_args(s, data)]) == 0
        states.append(shas(data))
    lost = 0
    for renames in (1, 2, 3):  # train, then val, then rejects; the manifest comes last
        assert killed(_killed_after_renames, (convert_args(src[0], data), renames), 60) is False  # it killed itself
        now = shas(data)
        order = ["med.jsonl", "med_val.jsonl", "med.rejects.jsonl", "med.manifest.json"]
        expected = {n: states[0][n] if order.index(n) < renames else states[1][n] for n in order}
        lost += now != {**expected, INFO_NAME: states[1][INFO_NAME]}
        manifest = json.loads((data / "med.manifest.json").read_text())
        lost += manifest["outputs"]["train"]["sha256"] == now["med.jsonl"]  # the old manifest does not vouch for the new file
        assert main([str(a) for a in convert_args(src[1], data)]) == 0  # back to b
    record("SIGKILL between the renames of a conversion", 3, 3 - lost, lost)
    assert lost == 0 and temps(data) == []


def _registry_states(base: list[str], prefix: str, n: int) -> list[list[str]]:
    """The key lists dataset_info.json goes through in :func:`_registry_commands`."""
    keys, states = list(base), [list(base)]
    for i in range(n):
        keys = [*keys, f"{prefix}{i}"]
        states.append(keys)
        if i:
            keys = [k for k in keys if k != f"{prefix}{i - 1}"]
            states.append(keys)
    return states


def _registry_commands(data: Path, file: Path, prefix: str, n: int) -> list[list]:
    """qfk datasets add PREFIX<i>, then remove PREFIX<i-1>: the registry is rewritten every step."""
    out = []
    for i in range(n):
        out.append(["datasets", "add", file, "--name", f"{prefix}{i}", "--data-dir", data])
        if i:
            out.append(["datasets", "remove", f"{prefix}{i - 1}", "--only", "--data-dir", data])
    return out


def _registry_whole(data: Path, allowed: dict[bytes, list[str]]) -> bool:
    """dataset_info.json is one of the allowed states, byte for byte; .bak parses and validates;
    every entry names a file that exists."""
    now = (data / INFO_NAME).read_bytes()
    if now not in allowed:
        return False
    bak = json.loads((data / (INFO_NAME + ".bak")).read_text())
    for name, entry in bak.items():
        validate_entry(name, entry)
    return all((data / e["file_name"]).is_file() for e in json.loads(now).values())


@pytest.mark.slow
def test_sigkill_during_registry_writes_leaves_a_whole_registry(tmp_path):
    """25 kills during loops of qfk datasets add / remove: dataset_info.json is always a state the
    loop went through, byte for byte."""
    data = tmp_path / "data"
    file = write_jsonl(data / "rows.jsonl", [{"instruction": f"q{i}", "input": "", "output": f"a{i}"} for i in range(50)])
    for n in ("seed", "seed2"):
        assert main(["datasets", "add", str(file), "--name", n, "--data-dir", str(data)]) == 0
    entry = json.loads((data / INFO_NAME).read_text())["seed"]
    start = time.monotonic()
    _cli_loop(_registry_commands(data, file, "warm", 5))
    step = (time.monotonic() - start) / 9
    rng = random.Random(SEED + 1)
    landed = lost = temps_left = 0
    for it in range(40):  # until KILLS landed
        if landed == KILLS:
            break
        base = list(json.loads((data / INFO_NAME).read_text()))
        prefix, n = f"k{it}_", 10
        allowed = {registry_bytes({k: entry for k in keys}): keys for keys in _registry_states(base, prefix, n)}
        landed += killed(_cli_loop, (_registry_commands(data, file, prefix, n),), rng.uniform(0.0, 2 * n * step))
        lost += not _registry_whole(data, allowed)
        temps_left += len(temps(data))
    assert main(["datasets", "add", str(file), "--name", "last", "--data-dir", str(data)]) == 0
    record("SIGKILL during registry writes", landed, landed - lost, lost)
    assert lost == 0 and landed == KILLS, (landed, lost)
    assert temps(data) == []
    print(f"registry: {landed} kills, {temps_left} temporary files seen after them, then swept")


# ---------------------------------------------------------------------------------------------
# a full disk
# ---------------------------------------------------------------------------------------------
def qfk_limited(*args, fsize: int | None = None) -> subprocess.CompletedProcess:
    """qfk as a separate process, with a file size limit (writes past it fail with EFBIG)."""
    def limit():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (fsize, fsize))

    env = {**os.environ, "PYTHONPATH": str(ROOT), "PYTHONDONTWRITEBYTECODE": "1"}
    return subprocess.run([sys.executable, "-m", "qwen_factory_kit", *map(str, args)], capture_output=True, text=True,
                          timeout=120, env=env, preexec_fn=limit if fsize else None)


def _refused_cleanly(p: subprocess.CompletedProcess, words: str, path: Path) -> bool:
    errors = [l for l in p.stderr.splitlines() if l.startswith("error:")]
    return (p.returncode == 2 and len(errors) == 1 and words in errors[0] and str(path) in errors[0]
            and "Traceback" not in p.stderr)


def _data_with_one_dataset(data: Path) -> dict[str, str | None]:
    assert main(["convert", "medical-r1", str(EXAMPLES / "medical_r1" / "rows.jsonl"), "--data-dir", str(data),
                 "--name", "small", "--register"]) == 0
    return {p.name: sha(p) for p in sorted(data.iterdir())}


def _files(data: Path, skip=()) -> dict[str, str | None]:
    return {p.name: sha(p) for p in sorted(data.iterdir()) if p.name not in skip}


@pytest.fixture
def small_fs(tmp_path):
    """A 2 MiB tmpfs (root only; skipped where it cannot be mounted)."""
    mnt = tmp_path / "small"
    mnt.mkdir()
    if os.geteuid() != 0 or not shutil.which("mount"):
        pytest.skip("mounting a tmpfs needs root")
    p = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mnt)], capture_output=True, text=True)
    if p.returncode:
        pytest.skip(f"cannot mount a tmpfs here: {p.stderr.strip()}")
    yield mnt
    subprocess.run(["umount", str(mnt)], capture_output=True)


def _fill(folder: Path) -> None:
    """Write a file until the file system is full."""
    with open(folder / "filler", "wb", buffering=0) as fh:
        try:
            while True:
                fh.write(b"\0" * 4096)
        except OSError as exc:
            assert exc.errno == errno.ENOSPC


@pytest.mark.slow
def test_full_disk_convert_and_registry(small_fs, tmp_path):
    """On a 2 MiB file system: a conversion of 4 MB fails, then a registry write on the full disk
    fails; each with one line naming the file, exit 2, nothing partial, the registry unchanged."""
    data = small_fs / "data"
    before = _data_with_one_dataset(data)
    big = medical_rows(tmp_path / "big.jsonl", 20_000, 3)
    p = qfk_limited("convert", "medical-r1", big, "--data-dir", data, "--name", "big", "--register")
    ok_convert = _refused_cleanly(p, "no space left", data / "big.jsonl") and _files(data) == before
    _fill(small_fs)
    extra = write_jsonl(tmp_path / "extra.jsonl", [{"instruction": "q", "input": "", "output": "a"}])
    p2 = qfk_limited("datasets", "add", extra, "--name", "extra", "--data-dir", data)
    ok_registry = _refused_cleanly(p2, "no space left", data / INFO_NAME) and _files(data) == before
    record("full disk (tmpfs)", 2, ok_convert + ok_registry, 2 - ok_convert - ok_registry)
    assert ok_convert, p.stderr
    assert ok_registry, p2.stderr


@pytest.mark.slow
def test_file_size_limit_convert_and_registry(tmp_path):
    """The same under a file size limit (RLIMIT_FSIZE, SIGXFSZ ignored: writes fail with EFBIG),
    which needs no root: the conversion's output and then the registry's new file exceed it."""
    data = tmp_path / "data"
    before = _data_with_one_dataset(data)
    big = medical_rows(tmp_path / "big.jsonl", 20_000, 3)
    p = qfk_limited("convert", "medical-r1", big, "--data-dir", data, "--name", "big", "--register", fsize=1 << 20)
    ok_convert = _refused_cleanly(p, "file too large", data / "big.jsonl") and _files(data) == before
    extra = write_jsonl(tmp_path / "extra.jsonl", [{"instruction": "q", "input": "", "output": "a"}])
    registry = (data / INFO_NAME).read_bytes()
    p2 = qfk_limited("datasets", "add", extra, "--name", "extra", "--data-dir", data, fsize=len(registry) + 16)
    ok_registry = (_refused_cleanly(p2, "file too large", data / INFO_NAME) and _files(data, {INFO_NAME + ".bak"})
                   == {k: v for k, v in before.items() if k != INFO_NAME + ".bak"}
                   and (data / (INFO_NAME + ".bak")).read_bytes() == registry)
    record("file size limit", 2, ok_convert + ok_registry, 2 - ok_convert - ok_registry)
    assert ok_convert, p.stderr
    assert ok_registry, p2.stderr


# ---------------------------------------------------------------------------------------------
# concurrent writers
# ---------------------------------------------------------------------------------------------
WRITERS, STEPS = 8, 12


def _writer_commands(data: Path, file: Path, w: int) -> list[list]:
    """Writer w adds w_0 .. w_11 and removes every third one after the next is added."""
    out = []
    for i in range(STEPS):
        out.append(["datasets", "add", file, "--name", f"w{w}_{i}", "--data-dir", data])
        if i % 3 == 2:
            out.append(["datasets", "remove", f"w{w}_{i - 1}", "--only", "--data-dir", data])
    return out


def test_eight_concurrent_writers_lose_nothing(tmp_path):
    data = tmp_path / "data"
    file = write_jsonl(data / "rows.jsonl", [{"instruction": "q", "input": "", "output": "a"}])
    assert main(["datasets", "add", str(file), "--name", "user_entry", "--data-dir", str(data)]) == 0
    writers = [FORK.Process(target=_cli_loop, args=(_writer_commands(data, file, w),)) for w in range(WRITERS)]
    for w in writers:
        w.start()
    for w in writers:
        w.join(120)
    final = json.loads((data / INFO_NAME).read_text())
    expected = {"user_entry"} | {f"w{w}_{i}" for w in range(WRITERS) for i in range(STEPS) if not (i % 3 == 1)}
    ops = sum(len(_writer_commands(data, file, w)) for w in range(WRITERS))
    wrong = len(set(final) ^ expected) + sum(w.exitcode != 0 for w in writers)
    record("concurrent registry writers (8 processes)", ops, ops - wrong, wrong)
    assert wrong == 0, (sorted(set(final) ^ expected), [w.exitcode for w in writers])
    for name, entry in final.items():
        validate_entry(name, entry)
    assert temps(data) == [] and json.loads((data / (INFO_NAME + ".bak")).read_text())
