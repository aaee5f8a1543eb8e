"""Exit 0 when this Python has maxent_lightning installed editable from this checkout, after
pyproject.toml last changed, with every requirement of its ``dev`` extra (and the extras that
pulls) present: what the README's quickstart leaves. ``make`` then only writes its stamp
instead of reinstalling. Run it with ``python -I`` so PYTHONPATH cannot stand in for the
install. Prints why not (exit 1) otherwise."""

import json
import sys
from importlib import metadata
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def why_not(extra: str = "dev") -> str | None:
    try:
        dist = metadata.distribution("maxent_lightning")
    except metadata.PackageNotFoundError:
        return "maxent_lightning is not installed"
    (record,) = [f for f in dist.files or [] if f.name == "direct_url.json"] or [None]
    url = json.loads(record.read_text()) if record is not None else {}
    if not url.get("dir_info", {}).get("editable") or url.get("url") != ROOT.as_uri():
        return f"maxent_lightning is not installed editable from {ROOT}"
    if record.locate().stat().st_mtime < (ROOT / "pyproject.toml").stat().st_mtime:
        return "pyproject.toml changed since maxent_lightning was installed"
    from packaging.requirements import Requirement  # (a dependency of lightning)

    extras, seen = [extra], set()
    while extras:
        name = extras.pop()
        seen.add(name)
        for req in map(Requirement, dist.requires or []):
            if req.marker is not None and not req.marker.evaluate({"extra": name}):
                continue
            if req.name == dist.name:  # an extra pulling others: maxent_lightning[wandb]
                extras += sorted(req.extras - seen)
                continue
            try:
                version = metadata.version(req.name)
            except metadata.PackageNotFoundError:
                return f"{req.name} (extra {name}) is not installed"
            if not req.specifier.contains(version, prereleases=True):
                return f"{req.name} {version} does not satisfy {req} (extra {name})"
    return None


if __name__ == "__main__":
    problem = why_not()
    if problem:
        print(f"installing: {problem}")
    sys.exit(1 if problem else 0)
