"""Where ktorch writes: --force replaces only a directory ktorch itself wrote; everything
else (the source, a repository, the current or home directory, a file, a link, a directory
with other files) is refused with one line, before any work, and left exactly as it was.
Ctrl-C at any moment leaves the old output or the new one, and no temporary litter."""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import shutil
import signal
import stat
import tempfile
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import ktorch
from ktorch import batch
from ktorch.cli import main
from ktorch.graph.errors import OutputExistsError, UnsafeOutputError
from ktorch.translate import output

SAMPLES = Path(__file__).resolve().parents[1] / "samples"
LITTER = re.compile(r"^\..+\.[0-9a-f]{12}\.(partial|old)(\.onnx)?$")
KTORCH_FILES = {"model.py", "model.safetensors", "ktorch.json"}


def cli(*args: str) -> tuple[int, str]:
    """Run `ktorch ARGS` in this process: (exit code, stderr)."""
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        code = main(list(args))
    return code, err.getvalue()


def snapshot(root: Path, *, skip: Path | None = None) -> dict[str, Any]:
    """Every path under `root` (itself included) with its kind, mode and bytes (or link target)."""
    tree: dict[str, Any] = {}
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        for name in ["", *dirnames, *filenames]:
            path = Path(dirpath, name) if name else Path(dirpath)
            if skip is not None and (path == skip or skip in path.parents):
                continue
            st_ = path.lstat()
            if stat.S_ISLNK(st_.st_mode):
                tree[str(path)] = ("link", os.readlink(path))
            elif stat.S_ISDIR(st_.st_mode):
                tree[str(path)] = ("dir", st_.st_mode)
            else:
                tree[str(path)] = ("file", st_.st_mode, path.read_bytes())
    return tree


def litter(root: Path) -> list[str]:
    return [str(Path(d, n)) for d, dirs, files in os.walk(root) for n in [*dirs, *files] if LITTER.match(n)]


def assert_refused(code: int, err: str, *needles: str) -> None:
    assert code == 2, err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("ktorch: error:"), err
    for needle in needles:
        assert needle in err, err


def is_complete_output(path: Path) -> bool:
    return (
        path.is_dir()
        and {p.name for p in path.iterdir()} >= KTORCH_FILES
        and "direction" in json.loads((path / "ktorch.json").read_text())
    )


@pytest.fixture
def world(tmp_path, monkeypatch) -> Path:
    """A working directory holding a small Keras model, chdir'ed into; HOME elsewhere."""
    home = tmp_path / "home"
    home.mkdir()
    (home / ".profile").write_text("mine\n")
    monkeypatch.setenv("HOME", str(home))
    cwd = tmp_path / "work"
    cwd.mkdir()
    shutil.copy(SAMPLES / "small_cnn.h5", cwd / "model.h5")
    monkeypatch.chdir(cwd)
    return cwd


def refused_untouched(root: Path, args: list[str], *needles: str) -> None:
    before = snapshot(root)
    assert_refused(*cli(*args), *needles)
    assert snapshot(root) == before
    assert not litter(root)


# -- places never replaced ------------------------------------------------------------------
def test_repository_holding_the_source(world):
    proj = world / "proj"
    (proj / ".git").mkdir(parents=True)
    (proj / ".git" / "HEAD").write_text("ref: refs/heads/main\n")
    (proj / "README.txt").write_text("read me\n")
    shutil.move(world / "model.h5", proj / "model.h5")
    for force in ([], ["--force"]):
        refused_untouched(
            world,
            ["convert", "proj/model.h5", "-o", "proj", "--no-verify", *force],
            "contains the source",
            "choose another -o",
        )


def test_repository_root(world):
    (world / "repo" / ".hg").mkdir(parents=True)
    refused_untouched(world, ["convert", "model.h5", "-o", "repo", "--no-verify", "--force"], "repository root")


def test_current_directory(world):
    for force in ([], ["--force"]):
        refused_untouched(world, ["convert", "model.h5", "-o", ".", "--no-verify", *force], "is the current directory")


def test_current_directory_that_is_a_ktorch_output(world, monkeypatch):
    ktorch.convert(world / "model.h5", world / "out", verify=False)
    monkeypatch.chdir(world / "out")
    refused_untouched(
        world, ["convert", "../model.h5", "-o", ".", "--no-verify", "--force"], "is the current directory"
    )


def test_home_and_above(world):
    home = Path(os.environ["HOME"])
    for entry in home.iterdir():
        entry.unlink()  # an empty home: even without --force it is not used
    for out, why in ((home, "is your home directory"), (home.parent, "contains"), (Path("/"), "contains")):
        for force in ([], ["--force"]):
            refused_untouched(home.parent, ["convert", "model.h5", "-o", str(out), "--no-verify", *force], why)


def test_directory_holding_the_source(world):
    (world / "models").mkdir()
    shutil.move(world / "model.h5", world / "models" / "a.h5")
    refused_untouched(
        world, ["convert", "models/a.h5", "-o", "models", "--no-verify", "--force"], "contains the source"
    )


def test_inside_a_source_directory(world):
    ktorch.convert(world / "model.h5", world / "m_torch", verify=False)  # a PyTorch source directory
    for out in ("m_torch", "m_torch/sub"):
        refused_untouched(world, ["convert", "m_torch", "-o", out, "--no-verify", "--force"], "the source")


def test_a_file(world):
    (world / "victim.txt").write_text("precious\n")
    refused_untouched(world, ["convert", "model.h5", "-o", "victim.txt", "--no-verify", "--force"], "is a file")
    refused_untouched(
        world, ["convert", "model.h5", "-o", "victim.txt/out", "--no-verify", "--force"], "not a directory"
    )


def test_the_source_itself(world):
    refused_untouched(world, ["convert", "model.h5", "-o", "model.h5", "--no-verify", "--force"], "is the source")


def test_foreign_file_beside_a_manifest(world):
    ktorch.convert(world / "model.h5", world / "out", verify=False)
    (world / "out" / "notes.txt").write_text("mine\n")
    refused_untouched(
        world,
        ["convert", "model.h5", "-o", "out", "--no-verify", "--force"],
        "notes.txt",
        "not a directory ktorch wrote",
    )


@pytest.mark.parametrize("manifest", ["{not json", '{"hello": 1}', '["ktorch_version", "direction"]', None])
def test_manifest_that_ktorch_did_not_write(world, manifest):
    out = world / "out"
    out.mkdir()
    (out / "model.py").write_text("# mine\n")
    if manifest is not None:
        (out / "ktorch.json").write_text(manifest)
    refused_untouched(world, ["convert", "model.h5", "-o", "out", "--no-verify", "--force"], "ktorch.json")


def test_symlink_is_never_followed(world):
    """A link to a directory (even an earlier ktorch output) or a dangling link is refused:
    replacing it would either drop the link or write into a place the link only points at."""
    ktorch.convert(world / "model.h5", world / "real_out", verify=False)
    (world / "link").symlink_to(world / "real_out")
    (world / "dangling").symlink_to(world / "nowhere")
    for out in ("link", "dangling"):
        for force in ([], ["--force"]):
            refused_untouched(world, ["convert", "model.h5", "-o", out, "--no-verify", *force], "symbolic link")


def test_earlier_ktorch_output_replaced_only_with_force(world):
    out = world / "out"
    ktorch.convert(world / "model.h5", out, verify=False)
    ktorch.verify.runners.import_emitted(out)  # leaves __pycache__/, still ktorch's own
    (out / "model.py").write_text((out / "model.py").read_text() + "# old\n")
    refused_untouched(world, ["convert", "model.h5", "-o", "out", "--no-verify"], "pass --force")
    code, err = cli("convert", "model.h5", "-o", "out", "--no-verify", "--force")
    assert code == 0, err
    assert is_complete_output(out) and "# old" not in (out / "model.py").read_text()
    assert not litter(world)


def test_empty_directory_needs_no_force_and_missing_parents_are_created(world):
    (world / "empty").mkdir()
    assert cli("convert", "model.h5", "-o", "empty", "--no-verify")[0] == 0
    assert is_complete_output(world / "empty")
    assert cli("convert", "model.h5", "-o", "a/b/c", "--no-verify")[0] == 0
    assert is_complete_output(world / "a" / "b" / "c")
    help_text = io.StringIO()
    with contextlib.redirect_stdout(help_text), pytest.raises(SystemExit):
        main(["convert", "--help"])
    assert "missing parent directories" in " ".join(help_text.getvalue().split())


def test_api_raises_the_error_types(world):
    with pytest.raises(UnsafeOutputError, match="is the source"):
        ktorch.convert(world / "model.h5", world / "model.h5", verify=False, force=True)
    ktorch.convert(world / "model.h5", world / "out", verify=False)
    with pytest.raises(OutputExistsError, match="pass --force") as caught:
        ktorch.convert(world / "model.h5", world / "out", verify=False)
    assert not isinstance(caught.value, UnsafeOutputError) and caught.value.exit_code == 2


# -- umask ----------------------------------------------------------------------------------
@pytest.mark.parametrize(("umask", "mode"), [(0o022, 0o755), (0o077, 0o700), (0o002, 0o775)])
def test_output_directory_follows_the_umask(world, umask, mode):
    old = os.umask(umask)
    try:
        assert output.current_umask() == umask
        ktorch.convert(world / "model.h5", world / "out", verify=False)
        ktorch.convert(world / "model.h5", world / "out", verify=False, force=True)
    finally:
        os.umask(old)
    assert stat.S_IMODE((world / "out").stat().st_mode) == mode


# -- Ctrl-C ---------------------------------------------------------------------------------
@pytest.fixture
def earlier(world) -> Path:
    """An earlier ktorch output at world/out, marked so that it can be told from a new one."""
    out = world / "out"
    ktorch.convert(world / "model.h5", out, verify=False)
    (out / "model.py").write_text((out / "model.py").read_text() + "# old\n")
    return out


def old_or_new(out: Path) -> str:
    assert is_complete_output(out), sorted(p.name for p in out.iterdir()) if out.exists() else "missing"
    return "old" if "# old" in (out / "model.py").read_text() else "new"


@pytest.mark.parametrize("step", ["write", "verify"])
def test_interrupt_while_writing_or_verifying(earlier, world, monkeypatch, step):
    from ktorch.translate.torch_writer import writer

    def interrupt(*args: Any, **kwargs: Any) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(
        *(writer, "write") if step == "write" else ("ktorch.verify.parity.check_keras_to_torch",), interrupt
    )
    before = snapshot(world)
    code, err = cli("convert", "model.h5", "-o", "out", "--force", *(["--no-verify"] if step == "write" else []))
    assert code == 130 and "nothing was written" in err, err
    assert snapshot(world) == before and not litter(world)
    shutil.rmtree(earlier)
    code, err = cli("convert", "model.h5", "-o", "out", *(["--no-verify"] if step == "write" else []))
    assert code == 130 and "nothing was written" in err, err
    assert not earlier.exists() and not litter(world)


@pytest.mark.parametrize("when", ["before", "after"])
@pytest.mark.parametrize(("has_old", "call"), [(True, 1), (True, 2), (False, 1)], ids=["aside", "into-place", "new"])
def test_interrupt_during_the_swap(earlier, world, monkeypatch, has_old, when, call):
    """os.replace interrupted before or after the rename of the old output aside (call 1)
    or of the new one into place (call 2): the old output or the new one, complete, and the
    CLI's message says which."""
    if not has_old:
        shutil.rmtree(earlier)  # then the new output's is the only rename
    real = os.replace
    calls: list[tuple[str, str]] = []

    def replace(src: Any, dst: Any, **kwargs: Any) -> None:
        if Path(dst).parent == world:  # the swap's renames, not the writers'
            calls.append((str(src), str(dst)))
            if len(calls) == call and when == "before":
                raise KeyboardInterrupt
            real(src, dst, **kwargs)
            if len(calls) == call:
                raise KeyboardInterrupt
            return
        real(src, dst, **kwargs)

    monkeypatch.setattr(os, "replace", replace)
    code, err = cli("convert", "model.h5", "-o", "out", "--no-verify", "--force")
    monkeypatch.undo()
    assert code == 130, err
    committed = (call == 2 or not has_old) and when == "after"
    if has_old or committed:
        assert old_or_new(earlier) == ("new" if committed else "old")
    else:
        assert not earlier.exists()
    assert ("had been written completely" in err) == committed and ("nothing was written" in err) != committed, err
    assert not litter(world)


def test_real_ctrl_c_during_the_swap_is_held_back(earlier, world, monkeypatch):
    """A SIGINT that arrives between the two renames waits until the new output is in place."""
    if signal.getsignal(signal.SIGINT) is not signal.default_int_handler:
        pytest.skip("SIGINT is handled by someone else here")
    real = os.replace

    def replace(src: Any, dst: Any, **kwargs: Any) -> None:
        real(src, dst, **kwargs)
        if Path(dst).parent == world and Path(src) == earlier:
            os.kill(os.getpid(), signal.SIGINT)  # right after the old output went aside

    monkeypatch.setattr(os, "replace", replace)
    code, err = cli("convert", "model.h5", "-o", "out", "--no-verify", "--force")
    monkeypatch.undo()
    assert code == 130 and "had been written completely" in err, err
    assert old_or_new(earlier) == "new" and not litter(world)


def test_target_checked_again_right_before_the_swap(earlier, world, monkeypatch):
    """Someone puts a file of theirs into the earlier output while the new one is written:
    the swap is refused and their file, and the earlier output, stay."""
    from ktorch.translate.torch_writer import writer

    real = writer.write

    def write(rendered: Any, directory: Path, **kwargs: Any) -> Any:
        (earlier / "notes.txt").write_text("mine\n")
        return real(rendered, directory, **kwargs)

    monkeypatch.setattr(writer, "write", write)
    assert_refused(*cli("convert", "model.h5", "-o", "out", "--no-verify", "--force"), "notes.txt")
    assert old_or_new(earlier) == "old" and (earlier / "notes.txt").read_text() == "mine\n"
    assert not litter(world)


# -- the check comes first ------------------------------------------------------------------
def test_factory_is_never_called_when_the_output_is_refused(world, monkeypatch):
    (world / "slowmod.py").write_text(
        "from pathlib import Path\n\n\ndef build():\n"
        "    Path('factory_was_called').write_text('yes')\n    raise SystemExit('called')\n"
    )
    monkeypatch.syspath_prepend(str(world))
    (world / "taken").mkdir()
    (world / "taken" / "notes.txt").write_text("mine\n")
    ktorch.convert(world / "model.h5", world / "build_keras", verify=False)  # the factory's default output
    for args in (["-o", "taken", "--force"], ["-o", "model.h5"], [], ["-o", "."]):
        code, err = cli("convert", "slowmod:build", "--input-shape", "1,3", *args)
        assert code == 2 and "ktorch: error:" in err, err
        assert not (world / "factory_was_called").exists()
    with pytest.raises(UnsafeOutputError):
        ktorch.convert("slowmod:build", world / "taken", force=True, input_shapes=[[1, 3]])
    assert not (world / "factory_was_called").exists()


def test_batch_plan_checks_every_output_before_any_worker(world, monkeypatch):
    shutil.copy(world / "model.h5", world / "b.h5")
    out = world / "out"
    ktorch.convert(world / "model.h5", out / "model_torch", verify=False)
    (out / "b_torch").mkdir()
    (out / "b_torch" / "notes.txt").write_text("mine\n")
    jobs = batch.plan(["model.h5", "b.h5"], out, None, {"force": False, "verify": False})
    assert "pass --force" in jobs[0].refused and "notes.txt" in jobs[1].refused
    jobs = batch.plan(["model.h5", "b.h5"], out, None, {"force": True, "verify": False})
    assert not jobs[0].refused and "not a directory ktorch wrote" in jobs[1].refused
    ran: list[int] = []
    monkeypatch.setattr(batch, "_run_pool", lambda jobs, indices, *a: ran.extend(indices) or [])
    monkeypatch.setattr(batch, "convert_one", lambda job: pytest.fail("must not run"))
    before = snapshot(world)
    outcomes, code = batch.run_batch(jobs[1:], workers=1, stream=io.StringIO())
    assert code == 2 and not ran and not outcomes[0].ok
    assert snapshot(world) == before
    jobs = batch.plan(["model.h5", "b.h5"], None, None, {"force": True, "verify": False})  # beside each source
    assert [Path(j.out).name for j in jobs] == ["model_torch", "b_torch"] and not any(j.refused for j in jobs)


def test_batch_interrupt_names_written_and_unwritten_outputs(world, monkeypatch):
    """A worker that finished its model although the parent never heard back: its output is
    reported written; the other (an earlier output, kept) is reported not written."""
    shutil.copy(world / "model.h5", world / "b.h5")
    out = world / "out"
    ktorch.convert(world / "b.h5", out / "b_torch", verify=False)
    jobs = batch.plan(["model.h5", "b.h5"], out, None, {"force": True, "verify": False})

    def pool(jobs: Any, indices: Any, *args: Any) -> list[int]:
        ktorch.convert(world / "model.h5", jobs[0].out, verify=False)
        raise KeyboardInterrupt

    monkeypatch.setattr(batch, "_run_pool", pool)
    before = snapshot(out / "b_torch")
    stream = io.StringIO()
    _, code = batch.run_batch(jobs, workers=2, stream=stream)
    text = stream.getvalue()
    assert code == 130
    assert f"1 of 2 output(s) written completely: {jobs[0].out}" in text, text
    assert re.search(r"not written.*: " + re.escape(jobs[1].out) + "$", text, re.MULTILINE), text
    assert "unfinished outputs were not written" not in text
    assert snapshot(out / "b_torch") == before and not litter(world)


def test_worker_interrupted_starts_no_queued_job(world, monkeypatch):
    """After Ctrl-C a worker skips the jobs already queued to it instead of converting them."""
    calls: list[str] = []

    def interrupted(src: Any, out: Any, **kwargs: Any) -> None:
        calls.append(str(src))
        raise KeyboardInterrupt

    monkeypatch.setattr(ktorch.api, "convert", interrupted)
    monkeypatch.setattr(batch, "_interrupted", False)
    jobs = batch.plan(["model.h5", "b.h5"], world / "out", None, {"verify": False})
    with pytest.raises(KeyboardInterrupt):
        batch.convert_one(jobs[0])
    skipped = batch.convert_one(jobs[1])
    assert calls == ["model.h5"] and not skipped.ok and "interrupted" in skipped.reason
    assert not (world / "out").exists()


# -- anything goes --------------------------------------------------------------------------
SOURCES = ["model.h5", "missing.h5", "srcdir", "notes.txt", "missing.onnx"]
OUTPUTS = [
    None, "notes.txt", "prev", "foreign", "empty", "link", "dangling", ".", "..", "model.h5",
    "new/nested/out", "srcdir", "srcdir/inside", "notes.txt/sub", "home",
]  # fmt: skip


@pytest.fixture(scope="module")
def earlier_output(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("earlier") / "prev"
    ktorch.convert(SAMPLES / "small_cnn.h5", out, verify=False)
    return out


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    src=st.one_of(st.just("model.h5"), st.sampled_from(SOURCES)),  # mostly the one that converts
    out=st.sampled_from(OUTPUTS),
    force=st.booleans(),
    to=st.sampled_from([None, "torch", "keras"]),
)
def test_no_command_touches_what_is_not_its_output(earlier_output, monkeypatch, src, out, force, to):
    root = Path(tempfile.mkdtemp(prefix="ktorch-safety-"))
    try:
        world = root / "work"
        world.mkdir()
        shutil.copy(SAMPLES / "small_cnn.h5", world / "model.h5")
        (world / "notes.txt").write_text("mine\n")
        (world / "srcdir").mkdir()
        (world / "srcdir" / "data.bin").write_bytes(b"\0\1")
        shutil.copytree(earlier_output, world / "prev")
        (world / "foreign").mkdir()
        shutil.copy(earlier_output / "ktorch.json", world / "foreign" / "ktorch.json")
        (world / "foreign" / "README.txt").write_text("mine\n")
        (world / "empty").mkdir()
        (world / "link").symlink_to(world / "prev")
        (world / "dangling").symlink_to(world / "nowhere")
        (world / "home").mkdir()
        monkeypatch.setenv("HOME", str(world / "home"))
        monkeypatch.chdir(world)
        args = [
            "convert",
            src,
            "--no-verify",
            *(["-o", out] if out else []),
            *(["--force"] if force else []),
            *(["--to", to] if to else []),
        ]
        before = snapshot(root)
        code, err = cli(*args)
        assert code in (0, 1, 2, 3), (args, code, err)
        assert "Traceback" not in err and "internal error" not in err, (args, err)
        assert not litter(root), args
        if code == 0:
            written = Path(os.path.abspath(out)) if out else world / "model_torch"
            assert is_complete_output(written), args
            assert written not in (world, root, world / "home"), args
            replaced = [Path(k) for k in before if written in Path(k).parents]
            foreign = [
                p for p in replaced if p.name not in {*KTORCH_FILES, "__pycache__"} and p.parent.name != "__pycache__"
            ]
            assert not foreign, (args, foreign)  # it replaced nothing but ktorch's own files
            kept = {k: v for k, v in before.items() if Path(k) != written and written not in Path(k).parents}
            after = snapshot(root, skip=written)
            created = set(after) - set(kept)
            assert all(Path(p) in written.parents and after[p][0] == "dir" for p in created), (args, created)
            assert {k: after.get(k) for k in kept} == kept, args
        else:
            assert snapshot(root) == before, args
            lines = [line for line in err.splitlines() if line.strip()]
            assert len(lines) == 1 and lines[0].startswith("ktorch: error:"), (args, err)
    finally:
        monkeypatch.undo()
        shutil.rmtree(root, ignore_errors=True)


# -- ktorch export's single file ------------------------------------------------------------
def test_export_refuses_an_existing_file_without_force(world):
    (world / "model.onnx").write_bytes(b"the user's own file")
    refused_untouched(world.parent, ["export", "model.h5", "-o", "model.onnx", "--no-verify"], "--force")


@pytest.mark.parametrize("target", ["model.h5", "sub", "link.onnx"])
def test_export_never_replaces_the_source_a_directory_or_a_link(world, target):
    (world / "sub").mkdir()
    (world / "sub" / "keep.txt").write_text("mine\n")
    (world / "link.onnx").symlink_to(world / "sub" / "keep.txt")
    refused_untouched(world.parent, ["export", "model.h5", "-o", target, "--no-verify", "--force"])


def test_export_with_force_replaces_the_file_whole(world):
    pytest.importorskip("tf2onnx")
    (world / "model.onnx").write_bytes(b"old")
    code, err = cli("export", "model.h5", "-o", "model.onnx", "--force")
    assert code == 0, err
    import onnx

    assert onnx.load(str(world / "model.onnx")).graph.node  # a real ONNX model replaced the old bytes
    assert not litter(world) and sorted(p.name for p in world.iterdir()) == ["model.h5", "model.onnx"]
