"""Does the data being scored overlap what the model was trained on? Read from the training provenance that
`train` writes into model.json, so `evaluate` can say when its figures measure fit rather than new patients."""
from __future__ import annotations

from pathlib import Path


def training_overlap(training: dict | None, *, data: str | Path, data_kind: str, split: str,
                     cache_info: dict | None = None, image_paths=()) -> str | None:
    """A one-line warning when the scored images may have been training images, else None.

    `training` is model.json's "training" block (None for models of unknown origin: nothing to say);
    `cache_info` the scored cache's dataset.json when `data_kind` is "cache"; `image_paths` the raw images
    scored (a manifest kept elsewhere can list a training source's images)."""
    trained_on = (training or {}).get("data") or {}
    sources = {_resolved(s) for s in trained_on.get("sources") or []}
    if not sources:
        return None
    train_split = trained_on.get("train_split", "train")
    if data_kind == "cache" and cache_info is not None:
        same_images = cache_info.get("fingerprint") and cache_info.get("fingerprint") == trained_on.get("fingerprint")
        # the fingerprint covers the images, not the split: the same images split another way (other options,
        # or another version of preprocess) mix the two
        same_split = (cache_info.get("split") == trained_on.get("split")
                      and cache_info.get("split_counts") == trained_on.get("split_counts"))
        if same_images and same_split:
            if split in (train_split, "all"):
                return (f"the model was trained on this cache's '{train_split}' split: these figures measure fit, "
                        "not performance on unseen patients")
            return None  # its own held-out split
        shared = sources & {_resolved(s) for s in cache_info.get("sources") or []}
    else:
        scored = Path(_resolved(data))
        # a manifest source stands for its folder's images; a folder source for itself
        roots = {s: Path(s) if Path(s).is_dir() else Path(s).parent for s in sources}
        shared = {s for s, root in roots.items()
                  if scored == Path(s) or scored == root or root in scored.parents or scored in root.parents}
        folders = {Path(_resolved(p)).parent for p in image_paths}
        shared |= {s for s, root in roots.items() if any(f == root or root in f.parents for f in folders)}
    if not shared:
        return None
    names = ", ".join(sorted(shared))
    return (f"the model was trained on images from {names} (cache {trained_on.get('fingerprint', '?')}); unless "
            "this data keeps those images out, these figures are not a held-out estimate")


def bundle_data_overlap(bundle, data: str | Path, data_kind: str, split: str, image_paths=()) -> str | None:
    """`training_overlap` for a model bundle and the data a command scores (a cache's dataset.json is read);
    an ensemble is checked member by member (each trained on its own data)."""
    import json

    info = None
    if data_kind == "cache":
        try:
            info = json.loads((Path(data) / "dataset.json").read_text())
        except (OSError, ValueError):
            info = None
    training = bundle.meta.get("training") or {}
    blocks = [("", training)] + [(f"member {k}: ", {"data": m.get("data")})
                                 for k, m in enumerate(training.get("members") or [], 1) if isinstance(m, dict)]
    paths = list(image_paths)
    for prefix, block in blocks:
        found = training_overlap(block, data=data, data_kind=data_kind, split=split if data_kind == "cache" else "all",
                                 cache_info=info, image_paths=paths)
        if found:
            return prefix + found
    return None


def _resolved(path: str | Path) -> str:
    try:
        return str(Path(path).expanduser().resolve())
    except OSError:
        return str(path)
