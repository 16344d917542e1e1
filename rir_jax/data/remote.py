"""Prepared datasets in a gs:// data_dir, read through a local mirror.

array_record reads local files only, and the datasets are small next to a run (tens to
hundreds of MB prepared), so a gs:// data_dir is mirrored, one dataset folder at
a time, into ~/.cache/rir_jax/gcs/BUCKET/FOLDER: the first run on a machine copies it,
later runs list the objects and copy only those whose version (GCS generation and size)
changed since they were last copied. `prepare` into a gs:// data_dir prepares in the
mirror, then uploads.

A file that changed in the bucket also drops the mirror's decoded-array cache when the
bucket holds none: that cache was made from the old files.
"""
from __future__ import annotations

import json
import logging
import pathlib
import shutil

from rir_jax import storage

log = logging.getLogger(__name__)

MIRRORS = pathlib.Path.home() / '.cache' / 'rir_jax' / 'gcs'
MANIFEST = '.mirrored.json'  # {file: the version of its object last copied}


def mirror_dir(data_dir: str) -> pathlib.Path:
  """Where the local copy of gs://BUCKET/FOLDER lives."""
  return MIRRORS / data_dir[len(storage.GCS_PREFIX):].strip('/')


def download(data_dir: str, dataset_folder: str, derived_cache: str) -> pathlib.Path:
  """Brings the mirror of `data_dir/dataset_folder` up to date; returns the mirror's data_dir.

  `derived_cache` names the sub-folders (any depth) that are made from the other files:
  kept when only the mirror has them, dropped when anything else changed.
  """
  remote = storage.find_files(storage.as_path(data_dir) / dataset_folder)
  local_root = mirror_dir(data_dir) / dataset_folder
  manifest_path = local_root / MANIFEST
  seen = json.loads(manifest_path.read_text()) if manifest_path.exists() else {}
  changed = [name for name, (version, _) in remote.items()
             if seen.get(name) != version or not (local_root / name).is_file()]
  for name in changed:
    _copy_in(remote[name][1], local_root / name)
  local = [str(p.relative_to(local_root)) for p in local_root.rglob('*') if p.is_file()]
  gone = [name for name in local if name not in remote and name != MANIFEST
          and derived_cache not in name.split('/')]
  for name in gone:
    (local_root / name).unlink()
  if changed or gone:
    log.info('mirrored %d changed file(s) of %s/%s into %s', len(changed), data_dir,
             dataset_folder, local_root)
    if not any(derived_cache in name.split('/') for name in remote):
      for stale in local_root.rglob(derived_cache):
        shutil.rmtree(stale, ignore_errors=True)
    storage.write_atomic(manifest_path, json.dumps(
        {name: version for name, (version, _) in remote.items()}, indent=0))
  return mirror_dir(data_dir)


def upload(data_dir: str, dataset_folder: str) -> None:
  """Copies the mirror's `dataset_folder` to the bucket, file by file."""
  local_root = mirror_dir(data_dir) / dataset_folder
  remote_root = storage.as_path(data_dir) / dataset_folder
  for path in sorted(local_root.rglob('*')):
    if path.is_file():
      (remote_root / str(path.relative_to(local_root))).write_bytes(path.read_bytes())


def _copy_in(source, target: pathlib.Path) -> None:
  """Downloads one object, whole or not at all (a kill, a full disk)."""
  target.parent.mkdir(parents=True, exist_ok=True)
  storage.write_atomic(target, source.read_bytes())
