"""predict on image files, export to one file, rir_jax.load: all the run's own predictions."""
import concurrent.futures
import json
import shutil

import numpy as np
import pytest
from flax import serialization
from PIL import Image

import rir_jax
from rir_jax import data, exported, inference, loading
from trained_helpers import assert_one_line_exit_2, eval_lines, run_module, shared_run

NUM_IMAGES = 200


@pytest.fixture(scope="module")
def run(tmp_path_factory, shared_data):
  return shared_run(tmp_path_factory, shared_data)


@pytest.fixture(scope="module")
def mnist_test(shared_data):
  images, labels = data.load("mnist", "test", manual_dir=shared_data / "mnist")
  return images[:NUM_IMAGES], labels[:NUM_IMAGES]


@pytest.fixture(scope="module")
def pngs(mnist_test, tmp_path_factory):
  folder = tmp_path_factory.mktemp("pngs")
  for index, image in enumerate(mnist_test[0]):
    Image.fromarray(image[..., 0]).save(folder / f"{index:04d}.png")
  return folder


def _predict(*args):
  result = run_module("predict", *args)
  assert result.returncode == 0, result.stderr[-3000:]
  return [json.loads(line) for line in result.stdout.splitlines()]


def test_pngs_are_predicted_as_the_runs_own_eval_predicts_them(run, pngs, mnist_test):
  images, labels = mnist_test
  trained = loading.load_trained(run, "last")
  predicted = _predict(f"--workdir={run}", "--step=last", "--json", "--top_k=3", pngs)
  assert [p["file"] for p in predicted] == [str(pngs / f"{i:04d}.png") for i in range(NUM_IMAGES)]
  top1 = np.array([int(p["top_k"][0]["class"]) for p in predicted])
  # The training loop's own eval program counts the same examples right.
  totals = inference.split_totals(trained, images, labels, batch_size=256)
  assert np.sum(top1 == labels) == totals["correct"]
  # And each prediction is the eval's logits' argmax, with their softmax probabilities.
  logits = inference.logits(trained, images, batch_size=256).astype(np.float64)
  np.testing.assert_array_equal(top1, logits.argmax(axis=1))
  probs = np.exp(logits - logits.max(1, keepdims=True))
  probs /= probs.sum(1, keepdims=True)
  got = np.array([[c["probability"] for c in p["top_k"]] for p in predicted])
  np.testing.assert_allclose(got, -np.sort(-probs, axis=1)[:, :3], rtol=1e-5)
  assert len(set(top1)) > 1  # a model that says one class for all would prove little


def test_pictures_of_another_mode_and_size_are_converted_or_refused(run, mnist_test, tmp_path):
  image = mnist_test[0][0][..., 0]
  Image.fromarray(image).convert("RGB").save(tmp_path / "rgb.png")  # same pixels, 3 channels
  Image.fromarray(image).save(tmp_path / "gray.png")
  Image.fromarray(image).resize((56, 56)).save(tmp_path / "large.png")
  rgb, gray = _predict(f"--workdir={run}", "--json", tmp_path / "rgb.png", tmp_path / "gray.png")
  assert rgb["top_k"] == gray["top_k"]
  refused = run_module("predict", f"--workdir={run}", tmp_path / "large.png")
  assert_one_line_exit_2(refused, "56x56")
  (resized,) = _predict(f"--workdir={run}", "--json", "--resize", tmp_path / "large.png")
  assert len(resized["top_k"]) == 5


def test_predict_bad_input_is_one_line_exit_2(run, pngs, tmp_path):
  (tmp_path / "empty").mkdir()
  (tmp_path / "notes.png").write_text("not a picture")
  cases = [
      ([f"--workdir={run}", tmp_path / "missing.png"], "does not exist"),
      ([f"--workdir={run}", tmp_path / "empty"], "no image files"),
      ([f"--workdir={run}", tmp_path / "notes.png"], "not a readable image"),
      ([f"--workdir={run}", "--top_k=0", pngs], "--top_k"),
      ([f"--workdir={tmp_path}", pngs], "no model.json"),
      ([f"--workdir={run / 'config.json'}", pngs], "not a rir-jax export"),
      ([pngs], "--workdir"),
  ]
  with concurrent.futures.ThreadPoolExecutor(max_workers=4) as pool:
    results = list(pool.map(lambda case: run_module("predict", *case[0]), cases))
  for (_, phrase), result in zip(cases, results):
    assert_one_line_exit_2(result, phrase)


def test_export_round_trip_gives_the_same_logits(run, mnist_test, tmp_path):
  out = tmp_path / "model.msgpack"
  result = run_module("export", f"--workdir={run}", f"--out={out}")
  assert result.returncode == 0, result.stderr[-3000:]
  best_step = eval_lines(run)[-1]["best/step"]
  raw = serialization.msgpack_restore(out.read_bytes())  # the documented layout
  assert raw["format"] == "rir-jax-export" and raw["version"] == 1
  card = json.loads(raw["card"])
  assert card["step"] == best_step and card["preprocess"]["class_names"][7] == "7"
  assert set(raw) == {"format", "version", "card", "params", "batch_stats"}
  run.rename(tmp_path / "moved")  # the file needs no workdir
  try:
    model, variables, preprocess = rir_jax.load(out)
    from_workdir = rir_jax.load(tmp_path / "moved", step=best_step)
  finally:
    (tmp_path / "moved").rename(run)
  images = mnist_test[0][:32]
  np.testing.assert_array_equal(model.apply(variables, preprocess(images), train=False),
                                from_workdir[0].apply(from_workdir[1], from_workdir[2](images),
                                                      train=False))
  # The normalisation is the run's, stored when it started, not recomputed.
  saved = json.loads((run / "model.json").read_text())["preprocess"]
  assert preprocess.mean == tuple(saved["mean"]) and preprocess.std == tuple(saved["std"])


def test_export_and_load_bad_input(run, tmp_path):
  cases = [
      ([f"--workdir={run}", f"--out={tmp_path}"], "is a folder"),
      ([f"--workdir={run}", f"--out={tmp_path / 'no' / 'm.msgpack'}"], "does not exist"),
      ([f"--workdir={tmp_path / 'none'}", f"--out={tmp_path / 'm'}"], "not a folder"),
      ([f"--workdir={run}", f"--out={tmp_path / 'm'}", "--step=3"], "no checkpoint of step 3"),
  ]
  with concurrent.futures.ThreadPoolExecutor(max_workers=4) as pool:
    results = list(pool.map(lambda case: run_module("export", *case[0]), cases))
  for (_, phrase), result in zip(cases, results):
    assert_one_line_exit_2(result, phrase)
  assert list(tmp_path.iterdir()) == []
  with pytest.raises(loading.LoadError, match="step"):
    rir_jax.load(run, step="soon")


def _export_with(path, run, change_card=None, **payload_changes):
  """An export of `run` whose card `change_card` alters, with payload entries replaced
  (None: removed), as another version, a damaged copy or a mixed-up file writes it."""
  trained = loading.load_trained(run, "last")
  card = {**json.loads(json.dumps(trained.card)), "step": trained.step, "source": str(run)}
  if change_card:
    change_card(card)
  exported.write(path, card, trained.variables)
  payload = serialization.msgpack_restore(path.read_bytes())
  for key, value in payload_changes.items():
    if value is None:
      del payload[key]
    else:
      payload[key] = value
  path.write_bytes(serialization.msgpack_serialize(payload))
  return path


def _set(*keys_and_value):
  *keys, last, value = keys_and_value
  def change(card):
    node = card
    for key in keys:
      node = node[key]
    node[last] = value
  return change


@pytest.mark.parametrize(("change_card", "payload", "phrase"), [
    (lambda card: card.pop("model"), {}, "not a model card"),
    (_set("model", "name", "vit"), {}, "its model 'vit' is not one this rir-jax knows"),
    (_set("model", "patch_size", 4), {},
     "has argument(s) this rir-jax does not know (patch_size): written by a newer rir-jax?"),
    (_set("dtype", "float8"), {}, "its dtype 'float8' is not one"),
    (lambda card: card["preprocess"].pop("mean"), {}, "its preprocess is damaged or incomplete"),
    (_set("model", "widths", [8, 32]), {},
     "has shape (16,), the card's model (32,): arrays of another model?"),
    (_set("model", "convs_per_stage", 2), {}, "which the card's model has: arrays of another"),
    (_set("model", "widths", "wide"), {}, "its model cannot be built from its arguments"),
    (None, {"params": None}, "is a damaged export: it lacks params"),
    (None, {"card": "{not json"}, "is a damaged export: its card is not JSON"),
    (lambda card: card.pop("step"), {}, "is a damaged export: its card names no step"),
], ids=["no_model", "unknown_model", "newer_argument", "unknown_dtype", "incomplete_preprocess",
        "other_shapes", "missing_arrays", "argument_of_another_type", "no_params",
        "card_not_json", "no_step"])
def test_a_card_this_version_cannot_build_from_is_one_load_error(run, tmp_path, change_card,
                                                                  payload, phrase):
  path = _export_with(tmp_path / "m.msgpack", run, change_card, **payload)
  with pytest.raises(loading.LoadError) as raised:
    rir_jax.load(path)
  assert phrase in str(raised.value) and str(path) in str(raised.value)
  assert "\n" not in str(raised.value)


def test_a_workdir_whose_card_is_of_a_newer_version_is_one_line_for_every_command(run, pngs,
                                                                                  tmp_path):
  newer = tmp_path / "newer"
  shutil.copytree(run, newer, ignore=shutil.ignore_patterns("eval"))  # others' reports
  card = json.loads((newer / "model.json").read_text())
  card["model"]["patch_size"] = 4
  (newer / "model.json").write_text(json.dumps(card))
  out = tmp_path / "out"
  out.mkdir()
  commands = [("predict", f"--workdir={newer}", pngs), ("evaluate", f"--workdir={newer}"),
              ("export", f"--workdir={newer}", f"--out={out / 'm.msgpack'}")]
  with concurrent.futures.ThreadPoolExecutor(max_workers=3) as pool:
    results = list(pool.map(lambda command: run_module(*command), commands))
  for result in results:
    assert_one_line_exit_2(result, f"{newer / 'model.json'}: its model 'cnn' has argument(s)")
  assert list(out.iterdir()) == [] and not (newer / "eval").exists()
