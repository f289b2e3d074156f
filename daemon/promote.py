"""The promote stage: immutable releases and a crash-consistent ``current`` swap.

Layout under the state dir::

    releases/run-0007/        adapter (adapters.safetensors, adapter_config.json),
                              manifest.json, and model/ when promotion.fuse is on
    current -> releases/run-0007   (relative symlink; the only link nightshift writes)
    promotion-intent.json     only while a promotion is under way

The registry's champion (the newest ``promotions`` row) and ``current`` must
name the same release. A promotion changes both, so it follows a protocol in
which every step is durable before the next and a crash at any instruction is
repaired by :func:`reconcile`.

Every change of champion follows it: a promotion (pipeline, ``approve``),
``nightshift rollback`` and the automatic rollback after a failed hand-off
(:func:`daemon.serving.handoff.switch_champion`), and the replacement of a
corrupt champion by reconcile. The target is a release, or the base model
alone: then ``current`` is removed and the row's and intent's release is ''.

Promotion protocol (:func:`promote_release`; fault points in brackets):

1. build: :func:`build_release` assembles ``releases/.run-NNNN.tmp``, writes a
   manifest with the size and SHA-256 of every file, makes the files
   read-only, renames it to ``releases/run-NNNN`` and fsyncs ``releases/``
   [``promote:release-built``].
   A rollback reuses a built release and starts at step 2.
2. intent: ``promotion-intent.json`` (run, model, release or '', the previous
   ``current`` target, the id of the newest promotion row) is written to a
   temp file, fsynced, renamed and the dir fsynced [``promote:intent-written``].
3. swap: a symlink at a temp name is ``os.replace``-d over ``current`` (or
   ``current`` is removed for the base model) and the dir fsynced
   (:func:`swap_current`) [``promote:current-swapped``].
4. commit: one registry transaction appends the promotion row and moves the
   run to ``promoted`` [``promote:registry-committed``].
5. clear: the intent is removed and the dir fsynced [``promote:intent-cleared``].

An exception (not a kill) in steps 3-4 undoes the swap and clears the intent
before it propagates, so the champion and ``current`` never part.

Reconcile rule (:func:`reconcile`, run under the run lock by every command that
opens the state: run-now, start, status, approve/reject, rollback):

- An intent whose promotion row is committed (a row newer than the one the
  intent recorded, naming its release, or '' for the base model): finish it:
  ``current`` -> the release (removed for the base model), intent removed
  (``promotion-completed``).
- An intent with no row: when the release passes verification (the base
  model has nothing to verify) and the run is still ``deciding`` or
  ``awaiting_approval`` or ``promoting`` (or the intent names no run to finish: a rollback),
  the change is finished: the row is written
  with " (completed by recovery)" added to its reason (``promotion-completed``).
  Otherwise it is undone: ``current`` goes back to the registry's champion
  (``promotion-undone``).
- No intent: the registry wins; ``current`` is made to point at the
  champion's release, or removed when nothing was ever promoted
  (``current-repointed``/``current-removed``).
- The champion's release fails verification (a file missing, a size differs,
  or with ``full=True`` a hash differs): the newest intact earlier release
  becomes champion through a new promotion row decided by ``nightshift``, or
  the base model when none is intact (``champion-replaced``), loudly: a
  warning in the log, a row in ``recoveries`` that ``status`` shows.
- Leftovers are removed: ``releases/.*.tmp`` dirs (``temp-removed``),
  ``releases/run-*`` that no promotion row names (``orphan-removed``) and
  ``.current.*`` temp links.

Every action is recorded in the registry's ``recoveries`` table and returned.

API for other stages (the serving hand-off and ``nightshift rollback``)::

    release = build_release(cfg, run_id=..., adapter_dir=..., manifest={...}, work_dir=...)
    promote_release(state_dir, registry, release=release, to_model_id=..., run_id=...,
                    reason=..., decided_by=..., finish_run=True, before_commit=None)
    reconcile(state_dir, registry, full=False) -> list[RecoveryAction]
    verify_release(release_dir, full=True) -> list[str]      # [] when intact
    current_target(state_dir) -> Path | None
"""

from __future__ import annotations

import json
import os
import shutil
import stat
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import structlog

from daemon.child import read_result_file, run_worker
from daemon.config import Config
from daemon.errors import PromotionRefused
from daemon.faults import fault_point
from daemon.fingerprint import file_sha256
from daemon.registry import Registry, RunStatus
from daemon.registry.models import PROMOTABLE_STATUSES, Model, ModelKind, Promotion
from daemon.serving.fusecheck import fuse_manifest_entry
from daemon.statedir import fsync_dir, write_private

log = structlog.get_logger("nightshift.promote")

CURRENT_LINK = "current"
RELEASES_DIR = "releases"
ADAPTER_FILES = ("adapters.safetensors", "adapter_config.json")
MANIFEST_FILE = "manifest.json"
INTENT_FILE = "promotion-intent.json"
RECOVERY_SUFFIX = " (completed by recovery)"
RECOVERY_ACTOR = "nightshift"
BASE_RELEASE = ""
"""``release_path`` of a promotion row (and an intent) whose champion is the base model alone."""

__all__ = [
    "CURRENT_LINK",
    "RELEASES_DIR",
    "PromotionIntent",
    "RecoveryAction",
    "build_release",
    "current_target",
    "fsync_dir",
    "promote_release",
    "reconcile",
    "release_name",
    "swap_current",
    "verify_release",
]


def release_name(run_id: int) -> str:
    """``run-0007``: one release per promoted run."""
    return f"run-{run_id:04d}"


# ---------------------------------------------------------------- releases


def _make_read_only(root: Path) -> None:
    for dirpath, _dirnames, filenames in os.walk(root):
        for name in filenames:
            p = Path(dirpath) / name
            p.chmod(p.stat().st_mode & ~(stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH))


def manifest_files(root: Path) -> dict[str, dict[str, Any]]:
    """``{relative path: {"size": bytes, "sha256": hex}}`` of every file under ``root``
    except the manifest itself (symbolic links are not followed and not listed)."""
    out: dict[str, dict[str, Any]] = {}
    for dirpath, _dirnames, filenames in os.walk(root):
        for name in sorted(filenames):
            p = Path(dirpath) / name
            rel = p.relative_to(root).as_posix()
            if rel == MANIFEST_FILE or p.is_symlink():
                continue
            out[rel] = {"size": p.stat().st_size, "sha256": file_sha256(p)}
    return dict(sorted(out.items()))


def verify_release(release: Path, *, full: bool = True) -> list[str]:
    """Check a release directory against its manifest.

    Args:
        release: ``releases/run-NNNN``.
        full: also hash every file (SHA-256; about 1 min per 16 GB of fused
            weights); False checks presence and sizes only.

    Returns:
        One line per problem (empty when intact): a missing manifest or file,
        a symbolic link, a size or hash that differs. A release written before
        manifests listed files is checked for its adapter files only.
    """
    release = Path(release)
    if not release.is_dir() or release.is_symlink():
        return [f"{release} is missing"]
    try:
        manifest = json.loads((release / MANIFEST_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        return [f"{release / MANIFEST_FILE} is unreadable ({exc})"]
    files = manifest.get("files")
    problems: list[str] = []
    if not isinstance(files, dict):
        for name in ADAPTER_FILES:
            if not (release / name).is_file():
                problems.append(f"{release / name} is missing")
        return problems
    for rel, info in files.items():
        p = release / rel
        if p.is_symlink():
            problems.append(f"{p} is a symbolic link (releases hold plain files)")
            continue
        if not p.is_file():
            problems.append(f"{p} is missing")
            continue
        size = p.stat().st_size
        if size != info.get("size"):
            problems.append(f"{p} is {size} bytes, the manifest says {info.get('size')}")
            continue
        if full and file_sha256(p) != info.get("sha256"):
            problems.append(f"{p} differs from the manifest (SHA-256 mismatch)")
    return problems


def build_release(
    cfg: Config,
    *,
    run_id: int,
    adapter_dir: Path,
    manifest: dict[str, Any],
    work_dir: Path,
    fuse_probes: list[dict[str, Any]] | None = None,
) -> Path:
    """Assemble ``releases/run-NNNN`` (adapter, manifest with file hashes, optional fused model).

    With ``promotion.fuse`` the fused model must reproduce base + adapter's replies to
    ``fuse_probes`` (eval prompts with the challenger's recorded replies,
    :func:`daemon.serving.fusecheck.fuse_probes`); the manifest's ``fuse`` entry records how
    it was fused and how many probes matched.

    Step 1 of the protocol: nothing visible to the serving layer changes.

    Returns:
        The release directory (read-only files).

    Raises:
        PromotionRefused: the release exists already, fusing failed (the
            message carries the fuse child's last output lines) or the fused model does not
            reproduce the evaluated model.
    """
    releases = cfg.paths.state_dir / RELEASES_DIR
    releases.mkdir(mode=0o700, parents=True, exist_ok=True)
    final = releases / release_name(run_id)
    if final.exists() or final.is_symlink():
        raise PromotionRefused(f"Release {final} already exists; releases are immutable.")
    tmp = releases / f".{final.name}.tmp"
    if tmp.is_symlink():
        tmp.unlink()
    elif tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(mode=0o700)
    try:
        for name in ADAPTER_FILES:
            shutil.copy2(adapter_dir / name, tmp / name)
        if cfg.promotion.fuse:
            result = run_worker(
                "daemon.worker.fuse",
                {
                    "base_model": str(cfg.paths.base_model),
                    "adapter_path": str(adapter_dir),
                    "out_dir": str(tmp / "model"),
                    "result_file": str(work_dir / "fuse_result.json"),
                    "probes": fuse_probes or [],
                },
                work_dir=work_dir,
                name="fuse",
                timeout_s=cfg.training.timeout_s,
                stop_grace_s=cfg.schedule.stop_grace_s,
            )
            if result.returncode != 0:
                raise PromotionRefused(f"Fusing the adapter {result.describe_with_output()}")
            manifest = {**manifest, "fuse": fuse_manifest_entry(cfg, read_result_file(work_dir / "fuse_result.json"))}
        full_manifest = {**manifest, "files": manifest_files(tmp)}
        (tmp / MANIFEST_FILE).write_text(json.dumps(full_manifest, indent=2, default=str), encoding="utf-8")
        _make_read_only(tmp)
        os.replace(tmp, final)
        fsync_dir(releases)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    fault_point("promote:release-built")
    return final


# ---------------------------------------------------------------- current


def current_target(state_dir: Path) -> Path | None:
    """The release ``current`` points to (resolved), or None."""
    link = Path(state_dir) / CURRENT_LINK
    if not link.is_symlink():
        return None
    return (Path(state_dir) / os.readlink(link)).resolve()


def _set_link(state_dir: Path, target: str | None) -> None:
    """Point ``current`` at ``target`` (relative to the state dir) or remove it; durable."""
    link = state_dir / CURRENT_LINK
    if target is None:
        link.unlink(missing_ok=True)
    else:
        tmp = state_dir / f".{CURRENT_LINK}.tmp.{os.getpid()}"
        tmp.unlink(missing_ok=True)
        os.symlink(target, tmp)
        os.replace(tmp, link)
    fsync_dir(state_dir)


def swap_current(state_dir: Path, release_dir: Path | None) -> Callable[[], None]:
    """Atomically point ``<state_dir>/current`` at ``release_dir`` (None removes it).

    Returns:
        A function that puts the previous link back.
    """
    state_dir = Path(state_dir)
    link = state_dir / CURRENT_LINK
    previous = os.readlink(link) if link.is_symlink() else None
    _set_link(state_dir, None if release_dir is None else os.path.relpath(release_dir, state_dir))
    return lambda: _set_link(state_dir, previous)


# ---------------------------------------------------------------- the protocol


@dataclass(frozen=True)
class PromotionIntent:
    """What a promotion under way is about to do (``promotion-intent.json``).

    Attributes:
        release: the release directory (absolute path), or '' (:data:`BASE_RELEASE`)
            for the base model alone (``current`` removed).
        to_model_id: the model that becomes champion.
        from_model_id: the champion before (None: the base).
        run_id: the run recorded with the promotion (None: none).
        finish_run: whether the run moves to ``promoted`` with it.
        reason, decided_by: as recorded in the promotion row.
        previous_link: the ``current`` link text before the swap (None: no link).
        last_promotion_id: id of the newest promotion row before (None: none).
    """

    release: str
    to_model_id: int
    from_model_id: int | None
    run_id: int | None
    finish_run: bool
    reason: str
    decided_by: str
    previous_link: str | None
    last_promotion_id: int | None


def read_intent(state_dir: Path) -> PromotionIntent | None:
    """The intent left by an unfinished promotion, or None (a torn one counts as none)."""
    path = Path(state_dir) / INTENT_FILE
    if path.is_symlink():
        path.unlink()
        return None
    try:
        return PromotionIntent(**json.loads(path.read_text(encoding="utf-8")))
    except FileNotFoundError:
        return None
    except (OSError, ValueError, TypeError):
        return None


def _clear_intent(state_dir: Path) -> None:
    (Path(state_dir) / INTENT_FILE).unlink(missing_ok=True)
    fsync_dir(Path(state_dir))


def promote_release(
    state_dir: Path,
    registry: Registry,
    *,
    release: Path | None,
    to_model_id: int,
    run_id: int | None,
    reason: str,
    decided_by: str,
    finish_run: bool = True,
    run_status: RunStatus = RunStatus.PROMOTED,
    before_commit: Callable[[Path | None], None] | None = None,
) -> Promotion:
    """Make ``release`` the champion and ``current`` (steps 2-5 of the protocol).

    Every champion change goes through here: a promotion, ``nightshift
    rollback``, the automatic rollback after a failed hand-off and the
    replacement of a corrupt champion. Call while holding the run lock.
    ``from_model_id`` is taken from the registry.

    Args:
        release: a built release directory (:func:`build_release`), or None
            for the base model alone (``current`` is removed; the promotion
            row's ``release_path`` is '').
        to_model_id: the model row it holds (the base model's row for None).
        run_id: the run recorded with the promotion; ``finish_run`` moves it
            to ``run_status`` (False for a rollback to an older run's release).
        run_status: ``promoted``, or ``handing_off`` when a serving hand-off follows
            (reconcile, finishing an interrupted promotion, always uses ``promoted``).
        before_commit: called with the release after ``current`` points at
            it and before the registry commit (e.g. a serving hand-off that
            must succeed); an exception from it undoes the swap.

    Returns:
        The promotion row.

    Raises:
        RegistryError: the run is not in a promotable state (nothing changed).
        Whatever ``before_commit`` raises (the swap was undone).
    """
    state_dir = Path(state_dir)
    champ = registry.champion()
    link = state_dir / CURRENT_LINK
    intent = PromotionIntent(
        release=str(Path(release)) if release is not None else BASE_RELEASE,
        to_model_id=to_model_id,
        from_model_id=champ[1].id if champ else None,
        run_id=run_id,
        finish_run=finish_run,
        reason=reason,
        decided_by=decided_by,
        previous_link=os.readlink(link) if link.is_symlink() else None,
        last_promotion_id=champ[0].id if champ else None,
    )
    write_private(state_dir / INTENT_FILE, json.dumps(asdict(intent)).encode(), durable=True)
    fault_point("promote:intent-written")
    try:
        undo = swap_current(state_dir, release)
    except BaseException:
        _clear_intent(state_dir)
        raise
    try:
        fault_point("promote:current-swapped")
        if before_commit is not None:
            before_commit(release)
        promo = registry.record_promotion(
            run_id=run_id,
            from_model_id=intent.from_model_id,
            to_model_id=to_model_id,
            release_path=intent.release,
            reason=reason,
            decided_by=decided_by,
            finish_run=finish_run,
            run_status=run_status,
        )
    except BaseException:
        undo()
        _clear_intent(state_dir)
        raise
    fault_point("promote:registry-committed")
    _clear_intent(state_dir)
    fault_point("promote:intent-cleared")
    log.info("promoted", run_id=run_id, release=intent.release or "base model", decided_by=decided_by)
    return promo


# ---------------------------------------------------------------- reconcile


@dataclass(frozen=True)
class RecoveryAction:
    """One repair :func:`reconcile` made (also stored in the ``recoveries`` table)."""

    action: str
    detail: str
    run_id: int | None = None


def _same_release(a: str | Path | None, b: str | Path | None) -> bool:
    """Both name the same release, or both the base model ('' or None)."""
    if not a or not b:
        return not a and not b
    return Path(a).name == Path(b).name


def _link_text(state_dir: Path, release: str | None) -> str | None:
    """What ``current`` must contain for ``release`` (None: no link, the base model)."""
    return os.path.relpath(release, state_dir) if release else None


def _label(release: str | None) -> str:
    return Path(release).name if release else "the base model"


def reconcile(state_dir: Path, registry: Registry, *, full: bool = False) -> list[RecoveryAction]:
    """Make ``current`` and the registry's champion agree and clean leftovers (rule above).

    Call while holding the run lock (no promotion is in progress then).

    Args:
        full: hash the champion's files (else sizes only; the pipeline hashes
            before it reuses cached champion scores).

    Returns:
        The repairs made, in order (empty when all was consistent).

    Raises:
        RegistryError: the registry cannot be written.
        OSError: the state dir cannot be changed.
    """
    state_dir = Path(state_dir)
    actions: list[RecoveryAction] = []

    def record(action: str, detail: str, run_id: int | None = None) -> None:
        actions.append(RecoveryAction(action, detail, run_id))
        registry.add_recovery(action, detail, run_id=run_id)
        log.warning("recovered", action=action, detail=detail, run_id=run_id)

    intent = read_intent(state_dir)
    if intent is not None:
        _finish_or_undo(state_dir, registry, intent, record)
    _repair_champion(state_dir, registry, record, full=full)
    _clean_leftovers(state_dir, registry, record)
    return actions


def _finish_or_undo(
    state_dir: Path, registry: Registry, intent: PromotionIntent, record: Callable[..., None]
) -> None:
    champ = registry.champion()
    committed = (
        champ is not None
        and (intent.last_promotion_id is None or champ[0].id > intent.last_promotion_id)
        and _same_release(champ[0].release_path, intent.release)
    )
    name = _label(intent.release)
    if committed:
        _set_link(state_dir, _link_text(state_dir, intent.release))
        _clear_intent(state_dir)
        record("promotion-completed", f"the change of champion to {name} was committed; current follows it", intent.run_id)
        return
    # The base model has no release files to verify; a release must be intact.
    problems = verify_release(Path(intent.release), full=True) if intent.release else []
    run_ok = True
    if intent.run_id is not None and intent.finish_run:
        try:
            status = RunStatus(registry.get_run(intent.run_id).status)
        except Exception:
            status = None
        run_ok = status in PROMOTABLE_STATUSES
    if not problems and run_ok:
        _set_link(state_dir, _link_text(state_dir, intent.release))
        registry.record_promotion(
            run_id=intent.run_id,
            from_model_id=intent.from_model_id,
            to_model_id=intent.to_model_id,
            release_path=intent.release,
            reason=intent.reason + RECOVERY_SUFFIX,
            decided_by=intent.decided_by,
            finish_run=intent.finish_run,
        )
        _clear_intent(state_dir)
        record(
            "promotion-completed",
            f"a change of champion to {name} was interrupted before the registry recorded it; "
            + ("the release is intact, so " if intent.release else "")
            + f"it was finished: champion and current name {name}",
            intent.run_id,
        )
        return
    why = "; ".join(problems) if problems else "the run is no longer waiting to be promoted"
    back = champ[0].release_path if champ else None
    _set_link(state_dir, _link_text(state_dir, back))
    _clear_intent(state_dir)
    record(
        "promotion-undone",
        f"a promotion to {name} was interrupted and cannot be finished ({why}); current points "
        f"at the champion again ({Path(back).name if back else 'none'})",
        intent.run_id,
    )


def _repair_champion(state_dir: Path, registry: Registry, record: Callable[..., None], *, full: bool) -> None:
    champ = registry.champion()
    if champ is None:
        if (state_dir / CURRENT_LINK).is_symlink():
            _set_link(state_dir, None)
            record("current-removed", "current pointed at a release although nothing was ever promoted")
        return
    promo, model = champ
    release = promo.release_path
    if release:
        problems = verify_release(Path(release), full=full)
        if problems:
            _replace_corrupt_champion(state_dir, registry, promo, model, problems, record, full=full)
            return
    target = current_target(state_dir)
    want = Path(release).resolve() if release else None
    if target != want:
        _set_link(state_dir, os.path.relpath(release, state_dir) if release else None)
        record(
            "current-repointed",
            f"current pointed at {target.name if target else 'nothing'}, the registry's champion is "
            f"{Path(release).name if release else 'the base model'}; current now follows the registry",
            promo.run_id,
        )


def _replace_corrupt_champion(
    state_dir: Path,
    registry: Registry,
    promo: Promotion,
    model: Model,
    problems: list[str],
    record: Callable[..., None],
    *,
    full: bool,
) -> None:
    bad = Path(promo.release_path).name
    seen = {promo.release_path}
    replacement: Promotion | None = None
    for older in reversed(registry.promotions()):
        if older.release_path in seen or not older.release_path:
            continue
        seen.add(older.release_path)
        if not verify_release(Path(older.release_path), full=True):
            replacement = older
            break
    why = "; ".join(problems[:3])
    if replacement is not None:
        to_model, release, run_id = replacement.to_model_id, replacement.release_path, replacement.run_id
        what = Path(release).name
    else:
        base_id = model.parent_base_id if model.kind == ModelKind.ADAPTER.value else model.id
        if base_id is None:
            return
        to_model, release, run_id, what = base_id, "", None, "the base model (no intact release left)"
    promote_release(
        state_dir,
        registry,
        release=Path(release) if release else None,
        to_model_id=to_model,
        run_id=run_id,
        reason=f"the champion's release {bad} failed verification ({why}); replaced by {what}",
        decided_by=RECOVERY_ACTOR,
        finish_run=False,
    )
    record(
        "champion-replaced",
        f"the champion's release {bad} is corrupt ({why}); the champion is now {what}",
        promo.run_id,
    )


def _clean_leftovers(state_dir: Path, registry: Registry, record: Callable[..., None]) -> None:
    for tmp_link in state_dir.glob(f".{CURRENT_LINK}.*"):
        tmp_link.unlink(missing_ok=True)
    releases = state_dir / RELEASES_DIR
    if not releases.is_dir():
        return
    named = {Path(p.release_path).name for p in registry.promotions() if p.release_path}
    target = current_target(state_dir)
    for entry in sorted(releases.iterdir()):
        if entry.name.startswith(".") and entry.name.endswith(".tmp"):
            _remove(entry)
            record("temp-removed", f"removed the unfinished release {entry.name} (a night stopped while building it)")
        elif entry.name.startswith("run-") and entry.name not in named and entry.resolve() != target:
            _remove(entry)
            record(
                "orphan-removed",
                f"removed the release {entry.name}: no promotion names it (built by a night "
                "stopped before it promoted)",
            )


def _remove(path: Path) -> None:
    if path.is_symlink() or path.is_file():
        path.unlink()
    else:
        shutil.rmtree(path, ignore_errors=True)
