"""DVC through its Python API: the pipeline's definition, reproduction and lock files.

The only module that imports dvc. What it returns is govern's own data from
`govern.pipeline`: `Pipeline` (stages, outputs, metrics files, artifacts of
`dvc.yaml`), `StageRun` (what happened to each stage), and the parsed
`dvc.lock` entries.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import yaml

from govern.envelope import utc_now
from govern.errors import ProjectError, StageFailed
from govern.pipeline import ArtifactSpec, OutputSpec, Pipeline, StageRun, StageSpec

OUTPUT_TAIL_BYTES = 4000


ProgressCallback = Callable[[str, str, StageRun | None], None]


def _quiet_environment() -> None:
    os.environ.setdefault("DVC_NO_ANALYTICS", "1")


@contextmanager
def _open(root: Path) -> Iterator[Any]:
    _quiet_environment()
    from dvc.exceptions import DvcException, NotDvcRepoError
    from dvc.repo import Repo

    _logs_to_stderr()
    with contextlib.chdir(root):  # DVC resolves targets such as "dvc.yaml" against the working directory
        try:
            repo = Repo(str(root))
        except NotDvcRepoError:
            raise ProjectError(f"{root} is not a DVC project: run `govern init` (or `dvc init`) first") from None
        except DvcException as error:
            raise ProjectError(f"DVC cannot open {root}: {error}") from None
        try:
            yield repo
        finally:
            repo.close()


@contextmanager
def _dvc_logs(quiet: bool) -> Iterator[None]:
    import logging

    logger = logging.getLogger("dvc")
    level = logger.level
    if quiet:
        logger.setLevel(logging.WARNING)
    try:
        yield
    finally:
        logger.setLevel(level)


def _logs_to_stderr() -> None:
    """DVC logs progress to stdout; govern keeps stdout for its own output (and --json)."""
    import logging

    for handler in logging.getLogger("dvc").handlers:
        if isinstance(handler, logging.StreamHandler) and handler.stream is not sys.stderr:
            handler.setStream(sys.stderr)


def ensure_initialized(root: Path) -> bool:
    """Run `dvc init` when the repository has no `.dvc` yet; True when it did."""
    if (root / ".dvc").is_dir():
        return False
    _quiet_environment()
    from dvc.exceptions import DvcException
    from dvc.repo import Repo

    _logs_to_stderr()
    try:
        Repo.init(str(root)).close()
    except DvcException as error:
        raise ProjectError(f"dvc init failed: {error}") from None
    return True


def load_pipeline(root: Path) -> Pipeline:
    """The pipeline as DVC understands it (templating, foreach and all)."""
    if not (root / "dvc.yaml").exists():
        raise ProjectError(f"No dvc.yaml in {root}: define the pipeline's stages first (`dvc stage add`)")
    with _open(root) as repo:
        return _describe(repo, root)


def _artifacts(repo: Any) -> dict[str, dict[str, Any]]:
    """What `repo.artifacts.read()` returns, without its name check: that imports GTO (0.3 s) to log a
    warning. govern checks the names it writes to GTO itself (gto_tags.representable)."""
    from dvc.annotations import Artifact

    return {
        repo.fs.relpath(dvcfile, repo.root_dir): {name: Artifact(**value) for name, value in entries.items()}
        for dvcfile, entries in repo.index._artifacts.items()
    }


def _describe(repo: Any, root: Path) -> Pipeline:
    from dvc.exceptions import DvcException
    from dvc.stage import PipelineStage

    try:
        index = repo.index
        stages = {}
        lock_files = set()
        tracked = []
        for stage in index.stages:
            if not isinstance(stage, PipelineStage):
                tracked.extend(_rel(root, out.fs_path) for out in stage.outs)
                continue
            dvcfile = _rel(root, stage.dvcfile.path)
            lock_files.add(str(Path(dvcfile).with_name("dvc.lock")))
            stages[stage.addressing] = StageSpec(
                name=stage.addressing,
                cmd=" && ".join(stage.cmd) if isinstance(stage.cmd, list) else str(stage.cmd),
                deps=tuple(_rel(root, dep.fs_path) for dep in stage.deps if not _is_param(dep)),
                outs=tuple(
                    OutputSpec(
                        path=_rel(root, out.fs_path),
                        stage=stage.addressing,
                        cache=bool(out.use_cache),
                        metric=bool(out.metric),
                        plot=bool(out.plot),
                    )
                    for out in stage.outs
                ),
                meta=dict(stage.meta or {}),
                desc=stage.desc,
                dvcfile=dvcfile,
            )
        from dvc.repo.metrics.show import _collect_top_level_metrics

        metrics = [out.path for stage in stages.values() for out in stage.outs if out.metric]
        metrics += [_rel(root, str(root / path)) for path in _collect_top_level_metrics(repo)]
        artifacts = [
            ArtifactSpec(
                name=name,
                path=_rel(root, str(root / Path(dvcyaml).parent / artifact.path)),
                type=artifact.type,
                desc=artifact.desc,
                labels=tuple(artifact.labels or ()),
                meta=dict(artifact.meta or {}),
            )
            for dvcyaml, entries in _artifacts(repo).items()
            for name, artifact in entries.items()
        ]
    except DvcException as error:
        raise ProjectError(
            _unparsable(error, root) or f"DVC cannot read the pipeline: {_one_line(error)}; fix dvc.yaml"
        ) from None
    return Pipeline(
        stages=stages,
        metrics_files=tuple(dict.fromkeys(metrics)),
        artifacts=tuple(artifacts),
        lock_files=tuple(sorted(lock_files)),
        tracked_files=tuple(tracked),
    )


def reproduce(
    root: Path,
    targets: Sequence[str] = (),
    on_progress: ProgressCallback | None = None,
    before: Callable[[Pipeline], None] | None = None,
    force: bool = False,
    on_run: Callable[[str], None] | None = None,
    quiet: bool = False,
    pull: bool = False,
) -> tuple[Pipeline, list[StageRun]]:
    """Reproduce the pipeline (or `targets`) through DVC's API.

    Reports each stage as it starts and ends, notes which stages DVC
    restored from its run-cache instead of running, and on failure raises
    `StageFailed` with the tail of the stage's output. `before` sees the
    pipeline first and may refuse to run it by raising. `on_run` hears of
    each stage DVC found changed, just before it runs (or restores) it.
    `quiet` keeps DVC's own progress lines ("Updating lock file") off
    stderr: a verifier's scratch clone is not the user's checkout. `pull`
    fetches the run-cache and missing outputs from the default remote first,
    when one is configured (a job's private cache reads the project's this way).
    """
    from dvc.exceptions import DvcException, ReproductionError
    from dvc.repo.reproduce import _reproduce_stage

    if not (root / "dvc.yaml").exists():
        raise ProjectError(f"No dvc.yaml in {root}: define the pipeline's stages first (`dvc stage add`)")
    notify = on_progress or (lambda *_: None)
    runs: list[StageRun] = []
    restored: set[str] = set()
    current: list[str] = []

    with _open(root) as repo:
        repo.scm_context.quiet = True  # govern says itself what to commit (`govern repro --commit`)
        pipeline = _describe(repo, root)
        unknown = [t for t in targets if t not in pipeline.stages]
        if unknown:
            known = ", ".join(pipeline.stages) or "none"
            raise ProjectError(f"Unknown stage {', '.join(unknown)}: the pipeline's stages are {known}")
        if pull:
            _pull_added_data(repo, root)
        _refuse_missing_sources(repo, pipeline, root)
        if before is not None:
            before(pipeline)

        cache = repo.stage_cache
        original_restore = cache.restore

        def restore(stage: Any, *args: Any, **kwargs: Any) -> Any:
            result = original_restore(stage, *args, **kwargs)
            restored.add(stage.addressing)
            return result

        cache.restore = restore

        def repro_fn(stage: Any, **kwargs: Any) -> Any:
            current.append(stage.addressing)
            notify("start", stage.addressing, None)
            if on_run is not None:
                _before_run(stage, on_run)
            started_at, clock = utc_now(), time.perf_counter()
            result = _reproduce_stage(stage, **kwargs)
            if result is None:
                status = "unchanged"
            else:
                status = "restored" if stage.addressing in restored else "ran"
            run = StageRun(stage.addressing, status, started_at, round(time.perf_counter() - clock, 6))
            runs.append(run)
            notify("end", stage.addressing, run)
            return result

        with _tee_output() as tail, _dvc_logs(quiet):
            try:
                pulling = pull and bool(repo.config["core"].get("remote"))
                repo.reproduce(targets=list(targets) or None, repro_fn=repro_fn, force=force, pull=pulling)
            except ReproductionError as error:
                stage = current[-1] if current else "?"
                cause = error.__cause__ or error
                raise StageFailed(stage, f"Stage '{stage}' failed: {_one_line(cause)}", tail.text()) from None
            except DvcException as error:
                stage = current[-1] if current else "?"
                raise StageFailed(
                    stage, f"DVC could not reproduce the pipeline: {_one_line(error)}", tail.text()
                ) from None
    return pipeline, runs


def _before_run(stage: Any, on_run: Callable[[str], None]) -> None:
    """DVC's Stage.reproduce calls stage.run only for a changed stage: hear of it on this instance."""
    original = stage.run

    def run(*args: Any, **kwargs: Any) -> Any:
        on_run(stage.addressing)
        return original(*args, **kwargs)

    stage.run = run


def _pull_added_data(repo: Any, root: Path) -> None:
    """Bring `dvc add` data missing from the workspace from the default remote (a job's: the project's cache), as
    `dvc pull FILE.dvc` would: `dvc repro --pull` fetches only what pipeline stages need from their own outputs."""
    from dvc.exceptions import DvcException
    from dvc.stage import PipelineStage

    if not repo.config.get("core", {}).get("remote"):
        return
    missing = [
        stage.relpath
        for stage in repo.index.stages
        if not isinstance(stage, PipelineStage) and any(not Path(out.fs_path).exists() for out in stage.outs)
    ]
    if missing:
        try:
            repo.pull(targets=missing)
        except DvcException as error:
            raise ProjectError(f"dvc pull of {', '.join(missing)} failed: {_one_line(error)}") from None


def _refuse_missing_sources(repo: Any, pipeline: Pipeline, root: Path) -> None:
    """A declared dependency that nothing produces and that is absent is a broken definition, not a failed run."""
    from dvc.stage import PipelineStage

    added = {
        _rel(root, out.fs_path): stage.relpath
        for stage in repo.index.stages
        if not isinstance(stage, PipelineStage)
        for out in stage.outs
    }
    produced = pipeline.output_paths
    for stage in repo.index.stages:
        if not isinstance(stage, PipelineStage):
            continue
        for dep in stage.deps:
            if _is_param(dep) or getattr(dep, "protocol", "local") != "local":
                continue
            path = _rel(root, dep.fs_path)
            if path in produced or any(path.startswith(p.rstrip("/") + "/") for p in produced):
                continue
            if not Path(dep.fs_path).exists() and path in added:
                raise ProjectError(
                    f"Stage '{stage.addressing}' depends on {path}, which does not exist ({added[path]} tracks it): "
                    f"`dvc checkout {added[path]}` restores it from the DVC cache (`dvc pull {added[path]}` from a "
                    "remote)"
                )
            if not Path(dep.fs_path).exists():
                raise ProjectError(
                    f"Stage '{stage.addressing}' depends on {path}, which does not exist: restore it, or fix the "
                    "stage's deps in dvc.yaml"
                )


def read_locks(root: Path, pipeline: Pipeline) -> tuple[dict[str, dict[str, Any]], str]:
    """The `dvc.lock` entries per stage, and the exact bytes of the lock files read.

    Lock entries are keyed by the stage's address, as in `Pipeline.stages`.
    """
    entries: dict[str, dict[str, Any]] = {}
    raw = []
    for lock in pipeline.lock_files:
        path = root / lock
        if not path.exists():
            continue
        text = path.read_text(encoding="utf-8")
        raw.append(f"{lock}\n{text}")
        try:
            data = yaml.safe_load(text) or {}
        except yaml.YAMLError as error:
            raise ProjectError(
                f"{lock} is not valid YAML ({_one_line(error)}): run `dvc repro` to rewrite it"
            ) from None
        prefix = "" if Path(lock).parent == Path(".") else f"{Path(lock).parent.as_posix()}/dvc.yaml:"
        for name, entry in (data.get("stages") or {}).items():
            entries[prefix + name] = entry
    return entries, "".join(raw)


def set_params(root: Path, file: str, values: dict[str, Any]) -> None:
    """Write dotted-key values into a params file, keeping its formatting and comments (as `dvc exp run -S`)."""
    from dvc.utils.serialize import MODIFIERS

    path = root / file
    modifier = MODIFIERS[path.suffix.lower()]  # YAML unless .json, .toml or .py
    if not path.is_file():
        raise ProjectError(f"Cannot set parameters in {file}: it must be an existing YAML, JSON or TOML file")
    with modifier(str(path)) as data:
        for key, value in values.items():
            *parents, leaf = key.split(".")
            node = data
            for part in parents:
                node = node[part]
            node[leaf] = value


def read_params(root: Path, file: str) -> dict[str, Any]:
    """A params file's content, as DVC reads it."""
    from dvc.exceptions import DvcException
    from dvc.utils.serialize import LOADERS

    path = root / file
    loader = LOADERS[path.suffix.lower()]
    if not path.is_file():
        raise ProjectError(f"No params file {file}: grid parameters must name keys of an existing params file")
    try:
        return loader(str(path)) or {}
    except DvcException as error:
        raise ProjectError(_unparsable(error, root) or f"DVC cannot read {file}: {_one_line(error)}") from None


def _unparsable(error: BaseException, root: Path) -> str | None:
    """A params, metrics or pipeline file DVC could not parse, named with the line where parsing stopped."""
    from dvc.utils.serialize import ParseError

    if not isinstance(error, ParseError):
        return None
    path = Path(error.path)
    shown = _rel(root, str(path)) if path.is_absolute() else str(path)
    kind = {".json": "JSON", ".toml": "TOML"}.get(path.suffix.lower(), "YAML")
    return f"{shown} is not valid {kind}{_where(root / path, kind)}: fix it and commit it"


def _where(path: Path, kind: str) -> str:
    """` (line L, column C: what)` for the first syntax error in a file, or nothing if it cannot tell."""
    import tomllib

    try:
        text = path.read_text(encoding="utf-8")
        if kind == "JSON":
            json.loads(text)
        elif kind == "TOML":
            tomllib.loads(text)
        else:
            yaml.safe_load(text)
    except json.JSONDecodeError as error:
        return f" (line {error.lineno}, column {error.colno}: {error.msg})"
    except tomllib.TOMLDecodeError as error:
        return f" ({error})"
    except yaml.MarkedYAMLError as error:
        mark = error.problem_mark or error.context_mark
        place = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        return f" ({place}{error.problem or error.context})"
    except (OSError, yaml.YAMLError, UnicodeDecodeError):
        return ""
    return ""


def checkout(root: Path) -> list[str]:
    """Restore DVC-tracked outputs to what the lock files say; returns what could not be restored."""
    from dvc.exceptions import DvcException

    with _open(root) as repo:
        try:
            repo.checkout(force=True)
        except DvcException as error:
            return [_one_line(error)]
    return []


def stale_stages(root: Path) -> list[str]:
    """Stages whose dependencies or outputs no longer match dvc.lock (what `dvc status` lists)."""
    from dvc.exceptions import DvcException

    with _open(root) as repo:
        try:
            return sorted(repo.status())
        except DvcException as error:
            raise ProjectError(f"dvc status failed: {_one_line(error)}") from None


def pull_if_remote(root: Path) -> bool:
    """Fetch cached data from the default DVC remote, when one is configured; True when it did."""
    from dvc.exceptions import DvcException

    with _open(root) as repo:
        if not repo.config.get("remote"):
            return False
        try:
            repo.pull()
        except DvcException as error:
            raise ProjectError(f"dvc pull failed: {_one_line(error)}") from None
    return True


def use_cache_dir(
    root: Path, cache: Path, remote: Path | None = None, inherited: tuple[str, dict[str, Any]] | None = None
) -> None:
    """Point a checkout's DVC cache at another one (a worktree sharing its repository's cache). With `remote`, that
    folder (another cache, read-only) becomes the checkout's default remote, which `reproduce(pull=True)` reads.
    With `inherited` (a name and its settings, `default_remote`), that remote becomes the checkout's default: an
    older commit, made before the project configured one, can still fetch its data."""
    folder = root / ".dvc"
    if folder.is_symlink() or not folder.is_dir():
        raise ProjectError(f"{folder} is not a directory of the checkout (a link?): refusing to configure it")
    text = f"[cache]\n    dir = {cache}\n"
    if remote is not None:
        text += f"[core]\n    remote = govern-project-cache\n['remote \"govern-project-cache\"']\n    url = {remote}\n"
    elif inherited is not None:
        name, settings = inherited
        text += f"[core]\n    remote = {name}\n['remote \"{name}\"']\n"
        text += "".join(f"    {key} = {value}\n" for key, value in settings.items() if "\n" not in str(value))
    # A commit may carry .dvc/config.local as a link to any file (the ledger): never written through.
    local = folder / "config.local"
    if os.path.lexists(local):
        local.unlink()
    handle = os.open(local, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644)
    with os.fdopen(handle, "w", encoding="utf-8") as sink:
        sink.write(text)


def default_remote(root: Path) -> tuple[str, dict[str, Any]] | None:
    """The project's default DVC remote as its configuration (committed and local) names it, or None."""
    with _open(root) as repo:
        name = repo.config.get("core", {}).get("remote")
        settings = repo.config.get("remote", {}).get(name) if name else None
    return (str(name), dict(settings)) if name and settings else None


def cache_dir(root: Path) -> Path:
    with _open(root) as repo:
        return Path(repo.cache.local.path)


def cache_root(root: Path) -> Path:
    """The project's DVC cache folder itself (`.dvc/cache`: `files/md5/...` and the run-cache `runs/`), which is
    also the layout of a DVC remote."""
    with _open(root) as repo:
        return Path(repo.cache.legacy.path)


def cache_object_path(root: Path, md5: str) -> Path:
    """Where the project's DVC cache keeps (or would keep) the object with this md5."""
    with _open(root) as repo:
        return Path(repo.cache.local.oid_to_path(md5))


def cached_file(root: Path, md5: str) -> Path | None:
    """The file with this md5 in the project's DVC cache, if it is there."""
    with _open(root) as repo:
        path = Path(repo.cache.local.oid_to_path(md5))
    return path if path.is_file() else None


def parse_yaml(text: str) -> Any:
    """A DVC file's text (dvc.yaml, dvc.lock) as data, read safely; ValueError when it is not YAML."""
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as error:
        raise ValueError(f"not valid YAML: {_one_line(error)}") from None


def load_structured(path: Path) -> Any:
    """A metrics or params file: JSON by its suffix, YAML otherwise (as DVC reads them)."""
    text = path.read_text(encoding="utf-8")
    try:
        if path.suffix.lower() == ".json":
            return json.loads(text)
        return yaml.safe_load(text)
    except (json.JSONDecodeError, yaml.YAMLError) as error:
        raise ProjectError(
            f"{path.name} is not valid {path.suffix[1:].upper() or 'YAML'}: {_one_line(error)}"
        ) from None


def tracked_source(root: Path, path: str) -> str:
    """The URL or repository a `.dvc` file imports from, or "dvc add" for plain tracked data."""
    try:
        data = yaml.safe_load((root / f"{path}.dvc").read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError):
        return "dvc add"
    deps = data.get("deps") or []
    if not deps:
        return "dvc add"
    dep = deps[0]
    repo = dep.get("repo") or {}
    if repo.get("url"):
        return f"{repo['url']}:{dep.get('path')}@{repo.get('rev_lock') or repo.get('rev') or 'HEAD'}"
    return str(dep.get("path"))


def _is_param(dep: Any) -> bool:
    from dvc.dependency.param import ParamsDependency

    return isinstance(dep, ParamsDependency)


def _rel(root: Path, path: str) -> str:
    try:
        return Path(os.path.relpath(path, root)).as_posix()
    except ValueError:
        return path


def _one_line(error: BaseException | str) -> str:
    text = str(error).strip()
    return " ".join(text.split()) if text else type(error).__name__


class _Tail:
    def __init__(self) -> None:
        self._chunks: deque[bytes] = deque()
        self._size = 0

    def add(self, chunk: bytes) -> None:
        self._chunks.append(chunk)
        self._size += len(chunk)
        while self._size - len(self._chunks[0]) > OUTPUT_TAIL_BYTES:
            self._size -= len(self._chunks.popleft())

    def text(self) -> str:
        data = b"".join(self._chunks)[-OUTPUT_TAIL_BYTES:]
        return data.decode("utf-8", errors="replace")


@contextmanager
def _tee_output() -> Iterator[_Tail]:
    """Pass the stage commands' output through to stderr, keeping its tail.

    DVC runs stage commands as child processes writing straight to file
    descriptors 1 and 2; the only way to see what a failed stage said is to
    put a pipe in between, for the duration of the reproduction. Their output
    goes to stderr so that govern's stdout carries only its own (JSON) output.
    """
    tail = _Tail()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass
    try:
        saved_out, saved_err = os.dup(1), os.dup(2)
    except OSError:
        yield tail
        return
    read_end, write_end = os.pipe()

    def pump() -> None:
        while chunk := os.read(read_end, 65536):
            tail.add(chunk)
            try:
                os.write(saved_err, chunk)
            except OSError:
                pass

    thread = threading.Thread(target=pump, daemon=True)
    thread.start()
    os.dup2(write_end, 1)
    os.dup2(write_end, 2)
    os.close(write_end)
    try:
        yield tail
    finally:
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except (OSError, ValueError):
                pass
        os.dup2(saved_out, 1)
        os.dup2(saved_err, 2)
        thread.join(timeout=10)
        os.close(read_end)
        os.close(saved_out)
        os.close(saved_err)


def stage_names_at(root: Path, commit: str) -> list[str] | None:
    """The stage names dvc.yaml declares at `commit` (None when the commit has no dvc.yaml): checked when a
    training is asked for, so a misspelt stage is refused then, not found by the job minutes later."""
    import subprocess

    shown = subprocess.run(["git", "show", f"{commit}:dvc.yaml"], cwd=root, capture_output=True, text=True)
    if shown.returncode != 0:
        return None
    try:
        document = yaml.safe_load(shown.stdout) or {}
    except yaml.YAMLError:
        return None
    stages = document.get("stages") if isinstance(document, dict) else None
    return sorted(stages) if isinstance(stages, dict) else []
