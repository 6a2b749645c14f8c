"""`medchat sweep --config FILE --data DIR --out DIR --grid key=v1,v2 [--grid ...]`.

Trains every point of the grid, one run after another, through the same `train()` as
`medchat train`, then writes the compare page ranked by one validation metric. Resumable: a
point whose run finished (train_summary.json) is skipped; one that was interrupted resumes from
its last complete checkpoint. OUT holds sweep.json (what was asked), runs/NAME and compare/.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from medchat.config import Config, load_config
from medchat.errors import MedchatError
from medchat.fileio import read_json, write_json
from medchat.runs import read_summary

SWEEP_FILE = "sweep.json"


def parse_grid(grid: Sequence[str]) -> list[tuple[str, list[str]]]:
    """`key=v1,v2` arguments -> (key, values); every malformed one reported at once."""
    axes: list[tuple[str, list[str]]] = []
    problems = []
    for arg in grid:
        key, sep, values = arg.partition("=")
        vals = [v.strip() for v in values.split(",") if v.strip()]
        if not sep or not key.strip() or not vals:
            problems.append(
                f"--grid {arg!r}: expected key=v1,v2 (e.g. train.learning_rate=1e-3,3e-4)"
            )
        elif key in (k for k, _ in axes):
            problems.append(f"--grid {key}: given twice; put all its values in one --grid")
        elif len(set(vals)) < len(vals):
            problems.append(f"--grid {arg!r}: a value is repeated")
        else:
            axes.append((key.strip(), vals))
    if not grid:
        problems.append("--grid: give at least one key=v1,v2")
    if problems:
        raise MedchatError("invalid sweep:\n  - " + "\n  - ".join(problems))
    return axes


def run_name(point: Sequence[tuple[str, str]]) -> str:
    """A folder name for one grid point: `learning_rate-0.001_r-8` (the last part of each key,
    the whole key where two axes share it)."""
    lasts = [k.rsplit(".", 1)[-1] for k, _ in point]
    parts = [
        f"{last if lasts.count(last) == 1 else key}-{value}"
        for (key, value), last in zip(point, lasts, strict=True)
    ]
    return re.sub(r"[^A-Za-z0-9._=-]+", "_", "_".join(parts))


def plan(
    config: str | Path | None, grid: Sequence[str], overrides: Sequence[str] = ()
) -> list[tuple[str, list[str], Config]]:
    """(name, overrides, config) for every grid point; configs are checked up front and all
    their problems reported together, before anything trains."""
    axes = parse_grid(grid)
    points = []
    problems = []
    for values in itertools.product(*[vals for _, vals in axes]):
        point = [(key, value) for (key, _), value in zip(axes, values, strict=True)]
        extra = [*overrides, *[f"{k}={v}" for k, v in point]]
        try:
            points.append((run_name(point), extra, load_config(config, extra)))
        except MedchatError as e:
            problems.append(f"{run_name(point)}: {e}".replace("\n", "\n    "))
    if problems:
        raise MedchatError("invalid sweep:\n  - " + "\n  - ".join(problems))
    return points


def _record(config: str | Path | None, data_dir: Path, grid: Sequence[str], overrides, points):
    return {
        "config": str(Path(config).resolve()) if config else None,
        "data": str(data_dir.resolve()),
        "grid": list(grid),
        "overrides": list(overrides),
        "runs": [{"name": n, "overrides": o} for n, o, _ in points],
    }


def sweep(
    config: str | Path | None,
    data_dir: str | Path,
    out: str | Path,
    grid: Sequence[str],
    *,
    overrides: Sequence[str] = (),
    rank_by: str | None = None,
) -> Path:
    """Train every grid point into OUT/runs/NAME (skipping finished ones), then compare them
    into OUT/compare ranked by `rank_by` (default: the config's train.metric_for_best)."""
    from medchat.console import console
    from medchat.report.compare import compare
    from medchat.train.train import latest_complete_checkpoint, train

    data_dir, out = Path(data_dir), Path(out)
    points = plan(config, grid, overrides)
    record = _record(config, data_dir, grid, overrides, points)
    if (out / SWEEP_FILE).is_file():
        before = read_json(out / SWEEP_FILE)
        if before != record:
            raise MedchatError(
                f"{out}: holds a different sweep (see {out / SWEEP_FILE}); "
                "rerun it with the same --config, --data, --grid and overrides, or pick a new --out"
            )
    elif out.exists() and any(out.iterdir()):
        raise MedchatError(f"{out}: exists and is not a sweep folder; pick a new --out")
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / SWEEP_FILE, record)

    run_dirs = []
    for i, (name, extra, cfg) in enumerate(points, 1):
        run_dir = out / "runs" / name
        run_dirs.append(run_dir)
        if read_summary(run_dir) is not None:
            console.print(f"[{i}/{len(points)}] {name}: finished earlier, skipped")
            continue
        resume = latest_complete_checkpoint(run_dir) is not None if run_dir.is_dir() else False
        verb = "resuming" if resume else "training"
        console.print(f"[bold][{i}/{len(points)}] {verb} {name}[/] ({' '.join(extra)})")
        train(cfg, data_dir, run_dir, resume=resume, overwrite=not resume and run_dir.exists())

    by = rank_by or points[0][2].train.metric_for_best
    compare(run_dirs, out / "compare", rank_by=by, overwrite=True)
    _print_ranking(out / "compare" / "comparison.json")
    return out


def _print_ranking(path: Path) -> None:
    from medchat.console import console
    from medchat.report.compare import RANK_BY

    rec: dict[str, Any] = read_json(path)
    k = RANK_BY[rec["rank_by"]]
    for i, name in enumerate(rec["order"], 1):
        value = rec["best"][name].get(k)
        console.print(f"  {i}. {name}: {rec['rank_by']} {'-' if value is None else f'{value:.4g}'}")
